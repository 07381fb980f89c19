"""One adapter per API shape; only this package knows payload shapes."""

from guard.protocols.base import Adapter, TextRef, write_texts
from guard.protocols.ollama import OllamaChat, OllamaEmbed, OllamaGenerate
from guard.protocols.openai import ChatCompletions, Completions, Embeddings

ADAPTERS: dict[str, Adapter] = {
    adapter.route: adapter
    for adapter in (
        ChatCompletions(),
        Completions(),
        Embeddings(),
        OllamaChat(),
        OllamaGenerate(),
        OllamaEmbed(),
    )
}

__all__ = ["ADAPTERS", "Adapter", "TextRef", "write_texts"]
