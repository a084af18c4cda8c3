"""User-facing errors: the CLI prints them without a traceback and exits with `exit_code`."""


class RetrainError(Exception):
    """A problem the user can fix (bad input, missing file, missing optional package).

    The message names the problem and the fix; the CLI prints it and exits 2.
    """

    exit_code = 2


class ConfigError(RetrainError):
    """One or more problems in a config; `problems` lists each as `[table].key: message`."""

    MAX_PROBLEM_CHARS = 400  # a 5,000-digit value must not flood the terminal

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = [
            p
            if len(p) <= self.MAX_PROBLEM_CHARS
            else f"{p[: self.MAX_PROBLEM_CHARS]}... ({len(p) - self.MAX_PROBLEM_CHARS} more characters)"
            for p in problems
        ]
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


class BackendUnavailable(RetrainError):
    """The model service kept failing during a run (after bounded retries).

    The run stops at its last checkpoint, which stays intact; `retrain resume` continues it once the
    service answers again. Exit code 1: the work failed, the config was fine.
    """

    exit_code = 1
