"""``quarterdeck policy eval``: measure the gate against a labelled corpus.

Prints recall, the false-positive rate, every miss (with the rule that decided it) and a
per-rule / per-family precision-recall table; ``--json`` prints the same as one JSON object.
Exit codes: 0 done, 1 a ``--fail-under-recall`` / ``--max-fp-rate`` threshold was missed,
2 the corpus, the rules file or an option is unusable (with every problem listed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from quarterdeck.exceptions import ConfigError
from quarterdeck.kit.console import console, err_console, print_json

if TYPE_CHECKING:  # the gate compiles its rules from YAML: imported by `policy eval` itself
    from quarterdeck.security.policy.corpus import Case, Report, RuleStats
    from quarterdeck.security.policy.decision import Decision

app = typer.Typer(help="The tool-call policy gate.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Keep ``eval`` a subcommand (``quarterdeck policy eval``)."""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _bad(lines: list[str]) -> typer.Exit:
    err_console.print("[bold red]error:[/] " + "\n  ".join(lines), highlight=False)
    return typer.Exit(2)


def _stats_table(title: str, rows: dict[str, RuleStats]) -> Table:
    table = Table(
        "rule" if title == "per rule" else "family",
        "fired: malicious",
        "benign",
        "precision",
        "expected",
        "caught",
        "recall",
        title=title,
    )
    for name, s in sorted(rows.items()):
        table.add_row(
            name,
            str(s.malicious),
            str(s.benign),
            _pct(s.precision),
            str(s.expected or "-"),
            str(s.caught if s.expected else "-"),
            _pct(s.recall),
        )
    return table


def _miss_table(title: str, misses: list[tuple[Case, Decision]]) -> Table:
    table = Table("case", "tool", "input", "action", "deciding rule", "note", title=title)
    for case, decision in misses:
        table.add_row(
            case.where,
            case.tool,
            case.summary(70),
            decision.action,
            decision.rule_id or "-",
            case.note,
        )
    return table


def print_report(report: Report) -> None:
    console.print(_stats_table("per rule", report.per_rule))
    console.print(_stats_table("per family", report.per_family))
    if report.false_negatives():
        console.print(_miss_table("false negatives (malicious, allowed)", report.false_negatives()))
    if report.false_positives():
        console.print(_miss_table("false positives (benign, stopped)", report.false_positives()))
    if report.benign_flagged():
        console.print(_miss_table("benign but flagged (audit noise)", report.benign_flagged()))
    console.print(
        f"[bold]{len(report.outcomes)} cases[/] ({report.malicious} malicious, "
        f"{report.benign} benign)  recall [bold]{_pct(report.recall)}[/]  "
        f"false positives [bold]{_pct(report.false_positive_rate)}[/] "
        f"({len(report.false_positives())})  benign flagged {_pct(report.benign_flag_rate)} "
        f"({len(report.benign_flagged())})",
        highlight=False,
    )


@app.command("eval")
def eval_corpus(
    corpus: Annotated[list[Path], typer.Argument(help="Corpus YAML files or directories.")],
    rules: Annotated[
        Path | None, typer.Option("--rules", help="Extra rules file merged over the built-ins.")
    ] = None,
    egress_mode: Annotated[
        str, typer.Option("--egress-mode", help="blocklist (default) or allowlist.")
    ] = "blocklist",
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="Egress allowlist host (repeatable).")
    ] = None,
    workspace: Annotated[
        Path, typer.Option("--workspace", help="Workspace root the calls are judged against.")
    ] = Path("/workspace"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    fail_under_recall: Annotated[
        float | None,
        typer.Option("--fail-under-recall", min=0, max=100, help="Exit 1 if recall % is lower."),
    ] = None,
    max_fp_rate: Annotated[
        float | None,
        typer.Option("--max-fp-rate", min=0, max=100, help="Exit 1 if the FP rate % is higher."),
    ] = None,
) -> None:
    """Run every corpus case through the gate and report recall and false positives.

    Recall counts flag, deny and require_approval as detected; the false-positive rate counts
    benign cases that were denied or sent for approval (flags on benign are shown apart)."""
    from quarterdeck.security.policy.corpus import CorpusError, evaluate, load
    from quarterdeck.security.policy.gate import PolicyGate

    if egress_mode not in ("blocklist", "allowlist"):
        raise _bad([f"--egress-mode must be blocklist or allowlist, not {egress_mode!r}"])
    if rules is not None and not rules.is_file():
        raise _bad([f"--rules {rules}: no such file"])
    try:
        gate = PolicyGate.load(rules, egress_mode=egress_mode, egress_allowlist=allow or ())
    except ConfigError as exc:
        raise _bad([f"{where}: {why}" for where, why in exc.errors]) from None
    try:
        cases = load(corpus)
    except CorpusError as exc:
        raise _bad(
            [f"bad corpus ({len(exc.problems)} problem(s)):"]
            + [f"{where}: {why}" for where, why in exc.problems[:50]]
        ) from None
    report = evaluate(gate, cases, workspace)
    if as_json:
        print_json(report.to_dict())
    else:
        print_report(report)
    failed = []
    if fail_under_recall is not None and report.recall * 100 < fail_under_recall:
        failed.append(f"recall {_pct(report.recall)} is under {fail_under_recall}%")
    if max_fp_rate is not None and report.false_positive_rate * 100 > max_fp_rate:
        failed.append(
            f"false-positive rate {_pct(report.false_positive_rate)} is over {max_fp_rate}%"
        )
    if failed:
        err_console.print("[bold red]failed:[/] " + "; ".join(failed), highlight=False)
        raise typer.Exit(1)
