"""A program on a real X display (Xvnc) that shows what reaches it: typed characters and the clipboard.

Run as `python -m tests.support.x_echo` with DISPLAY set (`XEcho` does that). It takes the keyboard
focus of the whole display (there is no window manager), draws what is typed (the last 12 lines) and
writes one line per event to stdout:
`key <char as repr>` for each typed character, `clipboard <repr or None>` when asked with `clipboard?`
on stdin, and `copied` after `copy <text>` put text on the X clipboard (which Xvnc offers to its
clients as ServerCutText). "ready" once it has the focus.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import signal
import sys
import tkinter
from collections.abc import AsyncIterator
from pathlib import Path

from tests.support.polling import wait_for

__all__ = ["XEcho", "x_echo"]

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    root = tkinter.Tk()
    root.geometry("640x480+0+0")
    root.configure(background="white")

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    # What was typed is drawn too, so the screen changes as one types (recording playback compares frames).
    shown = tkinter.StringVar(root)
    tkinter.Label(
        root, textvariable=shown, font=("Courier", 20), background="white", anchor="nw", justify="left"
    ).place(x=8, y=8, width=624, height=464)

    def on_key(event: tkinter.Event) -> None:  # type: ignore[type-arg]
        if event.char:
            say(f"key {event.char!r}")
            lines = (shown.get() + event.char.replace("\r", "\n")).split("\n")
            shown.set("\n".join(lines[-12:]))

    def on_command(_fd: object, _mask: object) -> None:
        line = sys.stdin.readline()
        if not line:
            root.destroy()
            return
        command, _, arg = line.rstrip("\n").partition(" ")
        if command == "copy":
            root.clipboard_clear()
            root.clipboard_append(ast.literal_eval(arg))
            root.update()
            say("copied")
        elif command == "clipboard?":
            try:
                say(f"clipboard {root.clipboard_get()!r}")
            except tkinter.TclError:
                say("clipboard None")

    root.bind("<Key>", on_key)
    root.tk.createfilehandler(sys.stdin, tkinter.READABLE, on_command)

    def ready() -> None:
        root.focus_force()
        say("ready")

    root.after(200, ready)
    root.mainloop()


class XEcho:
    """The program, started on `display`; `lines` holds everything it said."""

    def __init__(self, display: str) -> None:
        self.display = display
        self.lines: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> XEcho:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.x_echo",
            cwd=ROOT,
            env={**os.environ, "DISPLAY": self.display},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read())
        await wait_for(lambda: "ready" in self.lines, 20, "x_echo to take the focus")
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    @property
    def typed(self) -> str:
        return "".join(ast.literal_eval(line[4:]) for line in self.lines if line.startswith("key "))

    async def command(self, line: str, answer: str) -> str:
        """Send a command; returns the first new line starting with `answer`."""
        assert self._proc is not None and self._proc.stdin is not None
        seen = len(self.lines)
        self._proc.stdin.write(line.encode() + b"\n")
        await self._proc.stdin.drain()

        def answered() -> str | None:
            return next((x for x in self.lines[seen:] if x.startswith(answer)), None)

        return await wait_for(answered, 10, f"x_echo to answer {line.split()[0]}")

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            await self._proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


@contextlib.asynccontextmanager
async def x_echo(display: str) -> AsyncIterator[XEcho]:
    """The program running on `display` for the length of the block."""
    program = await XEcho(display).start()
    try:
        yield program
    finally:
        await program.stop()


if __name__ == "__main__":
    main()
