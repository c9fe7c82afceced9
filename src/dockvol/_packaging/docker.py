"""The docker CLI, run step by step: each failure names its step and says what to do."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

Progress = Callable[[str], None]


class StepError(RuntimeError):
    """A packaging step failed. ``str()`` is the message for the user."""

    def __init__(self, step: str, message: str, hint: str = "") -> None:
        self.step, self.message, self.hint = step, message, hint
        text = f"{step} failed: {message.strip()}"
        super().__init__(text + (f"\n  what to do: {hint}" if hint else ""))


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Docker:
    """``docker`` against one engine: ``host`` (``-H``) or else DOCKER_HOST or the default."""

    host: str | None = None
    progress: Progress = stderr_progress
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, *args: str) -> list[str]:
        return ["docker", *(["-H", self.host] if self.host else []), *args]

    def run(
        self,
        step: str,
        *args: str,
        hint: str = "",
        timeout: float = 600.0,
        stdin: int | None = None,
    ) -> str:
        """Run one command quietly; its stdout, or StepError with its stderr."""
        try:
            r = subprocess.run(
                self.argv(*args),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=stdin,
                env={**os.environ, **self.env},
            )
        except FileNotFoundError:
            raise StepError(
                step,
                "the docker command is not installed",
                "install the Docker CLI (Debian: apt-get install docker.io)",
            ) from None
        except subprocess.TimeoutExpired:
            raise StepError(
                step,
                f"docker {args[0]} did not finish in {timeout:.0f} s",
                hint or "check that the engine answers: docker info",
            ) from None
        if r.returncode != 0:
            raise StepError(step, r.stderr or r.stdout, hint or explain(r.stderr))
        return r.stdout

    def stream(
        self,
        step: str,
        *args: str,
        show: Callable[[str], bool] = lambda _: True,
        hint: str = "",
        timeout: float = 1800.0,
        env: dict[str, str] | None = None,
    ) -> list[str]:
        """Run a long command, passing the lines ``show`` accepts to progress as they come."""
        try:
            proc = subprocess.Popen(
                self.argv(*args),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                env={**os.environ, **self.env, **(env or {})},
            )
        except FileNotFoundError:
            raise StepError(
                step,
                "the docker command is not installed",
                "install the Docker CLI (Debian: apt-get install docker.io)",
            ) from None
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            lines.append(line)
            if line and show(line):
                self.progress(f"    {line}")
            if time.monotonic() > deadline:
                proc.kill()
                break
        rc = proc.wait()
        if rc != 0:
            tail = "\n".join(lines[-15:])
            raise StepError(step, tail, hint or explain(tail))
        return lines


def explain(stderr: str) -> str:
    """A next step for the usual docker failures."""
    text = stderr.lower()
    rules: Iterable[tuple[Sequence[str], str]] = (
        (
            ("cannot connect to the docker daemon", "is the docker daemon running"),
            "start the engine, or point -H/--host (or DOCKER_HOST) at it",
        ),
        (("permission denied",), "run as root or as a member of the docker group"),
        (
            (
                "pull access denied",
                "repository does not exist",
                "no such host",
                "dial tcp",
                "timeout",
            ),
            "the engine cannot reach that registry: use an image it already has "
            "(docker images), or make the registry reachable",
        ),
        (
            ("already exists",),
            "remove the old plugin (docker plugin rm NAME) or use a new tag "
            "and switch with docker plugin upgrade",
        ),
        (
            ("unauthorized", "denied", "authentication required"),
            "log in first: docker login REGISTRY",
        ),
        (("connection refused",), "is the registry running and listening on that address?"),
        (("no space left",), "free disk space on the engine host (docker system prune)"),
    )
    for needles, hint in rules:
        if any(n in text for n in needles):
            return hint
    return ""
