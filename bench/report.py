"""What a benchmark returns and how it becomes markdown: per benchmark, a table of bars
(our number, the baseline's, the bar, met or not) and detail tables."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Check:
    """One bar of the benchmarks issue, judged on this run's numbers."""

    what: str
    ours: str
    baseline: str
    bar: str
    met: bool | None   # None: nothing to judge (a number reported for context)

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**MISSED**", None: "—"}[self.met]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    title: str = ""

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""] if self.title else []
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
                  for row in self.rows]
        return "\n".join(lines)


@dataclass
class Section:
    """One benchmark's results."""

    name: str                  # the --only name
    title: str
    method: str                # how it was measured, in a few sentences
    checks: list[Check] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0       # how long the benchmark took
    error: str | None = None   # it could not run: why

    def check(self, what: str, ours: str, baseline: str, bar: str, met: bool | None) -> None:
        self.checks.append(Check(what, ours, baseline, bar, met))

    def markdown(self) -> str:
        out = [f"## {self.title}", "", self.method, ""]
        if self.error:
            out += [f"**The benchmark failed:** {self.error}", ""]
        if self.checks:
            bars = Table(["measure", "ours", "baseline (same run)", "bar", "result"])
            for c in self.checks:
                bars.add(c.what, c.ours, c.baseline, c.bar, c.verdict)
            out += [bars.markdown(), ""]
        for table in self.tables:
            out += [table.markdown(), ""]
        out += [f"- {note}" for note in self.notes]
        if self.notes:
            out.append("")
        out.append(f"_Took {self.seconds:.0f} s._")
        return "\n".join(out)


def verdicts(sections: list[Section]) -> tuple[int, int]:
    """(bars met, bars missed) over all sections."""
    checks = [c for s in sections for c in s.checks if c.met is not None]
    return sum(c.met is True for c in checks), sum(c.met is False for c in checks)
