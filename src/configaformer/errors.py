"""The one error type for config mistakes, carrying every problem found at once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One config mistake: where it is (`layers[3].num_heads`) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<config>'}: {self.message}"


class ConfigError(ValueError):
    """A config that cannot build a model. Lists every problem found, each with its key path.

    Raised before any tensor exists. `problems` holds the individual `Problem`s.
    """

    def __init__(self, problems: list[Problem] | Problem):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        n = len(self.problems)
        head = "invalid config: 1 problem" if n == 1 else f"invalid config: {n} problems"
        super().__init__(head + "\n" + "\n".join(f"  - {p}" for p in self.problems))
