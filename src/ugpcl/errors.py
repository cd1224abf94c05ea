"""Errors a user can act on: each names the file at fault and the fix."""


class UserError(Exception):
    """Bad input or configuration. The CLI prints the message without a traceback."""

    def __init__(self, message: str, *, path=None, fix: str | None = None):
        parts = [message]
        if path is not None:
            parts.insert(0, f"{path}:")
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))
        self.path = path
        self.fix = fix
