"""edgeticket: robust, transferable tickets for edge devices."""

__version__ = "0.1.0"
