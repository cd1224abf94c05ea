"""Errors a user can act on: each names the file at fault and the fix; warnings, once each."""

import sys


class UserError(Exception):
    """Bad input or configuration. The CLI prints the message without a traceback.

    Rendered as `<path>: <message>. Fix: <fix>` (the full stop added where the message has no
    sentence end of its own); a message of several lines (a list of problems)
    gets its fix on a line of its own, so that it is not read as the last item's. `problem` is
    the rendering without the fix, for an error quoted inside another (which has its own fix).
    `key` is the configuration key at fault (e.g. ["methods", "mt", "consistency"]), for the caller
    that knows which `--set` override wrote it (`study.load_study`).
    """

    def __init__(self, message: str, *, path=None, fix: str | None = None, key: list[str] | None = None):
        self.problem = f"{path}: {message}" if path is not None else message
        text = self.problem
        if fix:
            ends = message.rstrip().endswith((".", "!", "?", ":"))
            text += ("\nFix: " if "\n" in message else " Fix: " if ends else ". Fix: ") + fix
        super().__init__(text)
        self.message = message
        self.path = path
        self.fix = fix
        self.key = key


def warn_once():
    """A function printing each distinct warning once to stderr ("warning: ...")."""
    shown: set[str] = set()

    def warn(text: str) -> None:
        if text not in shown:
            shown.add(text)
            print(f"warning: {text}", file=sys.stderr, flush=True)

    return warn


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, saying where it stopped and how to go on; the CLI prints the message alone."""
