"""The `layerprobe` command: a typer app whose commands live one per module."""

from __future__ import annotations

import os
import sys

import typer

try:  # typer >= 0.2x vendors its own copy of click
    from typer._click import exceptions as cx
except ImportError:  # pragma: no cover - older typer uses click itself
    import click.exceptions as cx  # type: ignore[no-redef]

from layerprobe.errors import UserError

app = typer.Typer(
    name="layerprobe",
    help="See, and explain, how deleting decoder layers breaks long-chain reasoning and test-time scaling.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from layerprobe.cli import (
        analyze_cmd,
        explain_cmd,
        heal_cmd,
        influence_cmd,
        ingest_cmd,
        inspect_cmd,
        models_cmd,
        prune_cmd,
        report_cmd,
        runs_cmd,
        tasks_cmd,
        toy_cmd,
    )

    app.command("analyze")(analyze_cmd.analyze)
    app.command("report")(report_cmd.report)
    app.command("explain")(explain_cmd.explain)
    app.command("ingest")(ingest_cmd.ingest)
    app.command("runs")(runs_cmd.runs)
    app.command("prune")(prune_cmd.prune)
    app.command("heal")(heal_cmd.heal)
    app.command("influence")(influence_cmd.influence)
    app.command("inspect")(inspect_cmd.inspect)
    app.command("models")(models_cmd.models)
    app.command("tasks")(tasks_cmd.tasks)
    app.add_typer(toy_cmd.toy_app, name="toy")


_register()


#: Commands that never load a model, so the CLI need not import transformers for them.
_NO_MODEL_COMMANDS = frozenset({"report", "runs", "tasks", "models"})


#: The arguments of the command being run (what a run records as its command line).
_ARGV: list[str] = []


def current_argv() -> list[str]:
    """["layerprobe", *arguments] of the command being run (also when `main` is called in-process)."""
    return ["layerprobe", *_ARGV]


def _fail(code: int, message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: exit 0 on success, 2 on bad input (one line, no traceback), 1 on internal failure."""
    # The CLI shows its own progress; transformers' per-file bars and warnings would bury the errors.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = sys.argv[1:] if argv is None else argv
    _ARGV[:] = list(args)
    if not args or args[0] not in _NO_MODEL_COMMANDS:  # importing transformers costs ~2 s: only when needed
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="layerprobe", standalone_mode=False)
    except UserError as exc:
        _fail(2, str(exc))
    except cx.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `layerprobe` alone: show the help, exit 0
            if exc.ctx is not None:
                print(exc.ctx.get_help())
            sys.exit(0)
        cmd = exc.ctx.command_path if exc.ctx is not None else "layerprobe"
        _fail(2, f"{exc.format_message()} (see: {cmd} --help)".replace("\n", " "))
    except (typer.Abort, getattr(cx, "Abort", typer.Abort)):
        _fail(130, "interrupted")
    except cx.ClickException as exc:
        _fail(exc.exit_code or 2, exc.format_message().replace("\n", " "))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _fail(130, "interrupted")
    except Exception as exc:
        if os.environ.get("LAYERPROBE_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _fail(1, f"internal error: {type(exc).__name__}: {first} (set LAYERPROBE_DEBUG=1 for the traceback)")
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
