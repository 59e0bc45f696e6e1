"""What the studio's handlers read of a visitor's ``gr.Request``, for tests that call them directly."""

from __future__ import annotations


class FakeRequest:
    """A request of the session ``key`` (Gradio's session hash)."""

    def __init__(self, key: str):
        self.session_hash = key
