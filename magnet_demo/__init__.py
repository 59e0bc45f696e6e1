"""magnet-demo: watch MAGNeT (masked non-autoregressive audio generation) decode, step by step."""

__version__ = "0.1.0"
