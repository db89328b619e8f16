"""What every training step reports: a rich progress bar on stderr, one line per problem above
it, and a summary of what was done, skipped and failed (the skip count is how a rerun shows it
did no work twice)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class StepReport:
    step: str
    done: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)  # step-specific: LLM calls, cache hits…

    @property
    def failed(self) -> int:
        return len(self.problems)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def summary(self) -> str:
        extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in sorted(self.counters.items()))
        return f"{self.step}: {self.done} done, {self.skipped} skipped, {self.failed} failed{extra}"


class StepProgress:
    """A progress bar plus `problem(line)`, which prints one line above the bar and records it."""

    def __init__(self, report: StepReport, total: int, show: bool = True) -> None:
        self.report = report
        self._bar = None
        self._task = None
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=Console(file=sys.stderr), transient=False,
            )
            self._task = self._bar.add_task(report.step, total=total)

    def __enter__(self) -> StepProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, n: int = 1, description: str | None = None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=n, description=description or self.report.step)

    def problem(self, line: str) -> None:
        self.report.problems.append(line)
        if self._bar is not None:
            from rich.text import Text

            self._bar.console.print(Text.assemble(("error", "bold red"), f": {line}"), soft_wrap=True)
        else:
            print(f"error: {line}", file=sys.stderr)

    @contextlib.contextmanager
    def dialogue(self, dialogue: str) -> Iterator[None]:
        """Any TrainingDataError (or other KameError) inside becomes one problem line for this
        dialogue; the step goes on with the next one."""
        from kame_desktop.errors import KameError

        try:
            yield
        except KameError as e:
            self.problem(f"{dialogue}: {e}")
        finally:
            self.advance()
