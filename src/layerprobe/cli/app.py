"""The `layerprobe` command: a typer app whose commands live one per module."""

from __future__ import annotations

import functools
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any

import typer

try:  # typer >= 0.2x vendors its own copy of click
    from typer._click import exceptions as cx
except ImportError:  # pragma: no cover - older typer uses click itself
    import click.exceptions as cx  # type: ignore[no-redef]

from layerprobe.cli.common import ARGV, console
from layerprobe.errors import UserError

app = typer.Typer(
    name="layerprobe",
    help="See, and explain, how deleting decoder layers breaks long-chain reasoning and test-time scaling.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def says_how_to_resume(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command that prints the exact command resuming the job it ran, when that job stopped before it
    completed (Ctrl-C, SIGTERM, an error): one place for every job."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except BaseException as exc:
            from layerprobe.jobs.job import resume_command_of

            resume = resume_command_of(exc)
            if resume:
                console(stderr=True).print("to resume: " + shlex.join(resume))
            raise

    return wrapper


def _register() -> None:
    from layerprobe.cli import (
        analyze_cmd,
        compare_cmd,
        explain_cmd,
        heal_cmd,
        influence_cmd,
        ingest_cmd,
        inspect_cmd,
        judge_cmd,
        models_cmd,
        prune_cmd,
        report_cmd,
        runs_cmd,
        tasks_cmd,
        toy_cmd,
    )

    app.command("analyze")(says_how_to_resume(analyze_cmd.analyze))
    app.command("report")(report_cmd.report)
    app.command("compare")(compare_cmd.compare)
    app.command("explain")(says_how_to_resume(explain_cmd.explain))
    app.command("ingest")(says_how_to_resume(ingest_cmd.ingest))
    app.command("judge")(says_how_to_resume(judge_cmd.judge))
    app.command("runs")(runs_cmd.runs)
    app.command("prune")(prune_cmd.prune)
    app.command("heal")(says_how_to_resume(heal_cmd.heal))
    app.command("influence")(influence_cmd.influence)
    app.command("inspect")(inspect_cmd.inspect)
    app.command("models")(models_cmd.models)
    app.command("tasks")(tasks_cmd.tasks)
    app.add_typer(toy_cmd.toy_app, name="toy")


_register()


#: Commands that never load a model, so the CLI need not import transformers for them.
_NO_MODEL_COMMANDS = frozenset({"report", "compare", "runs", "tasks", "models"})


def hub_reachable(timeout: float = 1.0) -> bool:
    """Whether the Hugging Face hub (or $HF_ENDPOINT) answers a TCP connection within `timeout` seconds
    (name lookup included: it runs in a thread that is abandoned when it takes longer)."""
    import socket
    import threading
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok and ok[0])


def _offline_when_unreachable() -> None:
    """Set HF_HUB_OFFLINE=1 when the hub cannot be reached, so that a model, tokenizer or data set that
    is not in the local cache fails at once instead of after ~25 s of retries. Not when the user set
    HF_HUB_OFFLINE either way, or goes through a proxy (a direct connection says nothing then)."""
    proxies = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")
    if os.environ.get("HF_HUB_OFFLINE") is not None or any(os.environ.get(v) for v in proxies):
        return
    if not hub_reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"


def _tidy_help(command: Any) -> Any:
    """On/off flags take no value, so their help shows no type placeholder ("<bool>"): every command's
    flags at once, including --help."""
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False):
            param.metavar = ""
    make_help = getattr(command, "get_help_option", None)
    if make_help is not None:

        def get_help_option(ctx: Any, make_help: Callable[..., Any] = make_help) -> Any:
            opt = make_help(ctx)
            if opt is not None:
                opt.metavar = ""
            return opt

        command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)
    return command


def _fail(code: int, message: str) -> None:
    from layerprobe.rules import printable

    sys.stderr.write(f"error: {printable(message, lines=False)}\n")  # one line, whatever names it holds
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: exit 0 on success, 2 on bad input (one line, no traceback), 1 on internal failure."""
    # The CLI shows its own progress; transformers' per-file bars and warnings would bury the errors.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = sys.argv[1:] if argv is None else argv
    ARGV[:] = list(args)
    # importing transformers costs ~2 s: only when a command that loads a model runs (not for --help)
    if args and args[0] not in _NO_MODEL_COMMANDS and args[0] not in ("--help", "-h") and "--help" not in args:
        _offline_when_unreachable()  # before huggingface_hub is imported: it reads the variable once
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    command = _tidy_help(typer.main.get_command(app))
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
