"""Thin Litestar routes: read the request, call the pipeline, write the response."""
