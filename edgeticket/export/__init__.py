"""Exporters to edge formats; each checks its output against torch and leaves no file if the check fails."""

from .onnx import ExportReport, export_onnx, read_metadata  # noqa: F401
