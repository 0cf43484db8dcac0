"""Tickets: the file format and the methods that draw them."""

from .draw import DrawConfig, DrawReport, DrawTraining, draw_ticket, list_methods  # noqa: F401
from .patterns import list_patterns  # noqa: F401
from ..ticket import Ticket  # noqa: F401  (the core type, re-exported where the methods are)
from . import imp, lmp  # noqa: E402,F401  (register the training methods)
