"""Detectors report findings; they never decide and never mutate."""

from guard.detectors.base import Detector, Direction, Finding, ScanContext
from guard.detectors.registry import DetectorRegistry

__all__ = ["Detector", "DetectorRegistry", "Direction", "Finding", "ScanContext"]
