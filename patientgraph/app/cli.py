"""The ``patientgraph`` command line (a contract: see docs/design.md, "Command line").

Every command exits 0 on success and 2 on a user mistake, printing one paragraph that
names the file, row and column and the fix. ``ingest`` and ``run`` hold the workspace lock
(a second one on the same workspace exits 2); the readers (``similar``, ``serve``, ``info``)
do not take it. Progress goes to stderr; nothing identifying (patient ids, image paths) is
printed beyond what the user typed.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from patientgraph.errors import EXIT_INPUT_ERROR, InputError, did_you_mean

app = typer.Typer(
    help="PatientGraph: a patient similarity graph and imaging-biomarker discovery engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ingest_app = typer.Typer(help="Bring an archive into a workspace.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
neo4j_app = typer.Typer(
    help="The local Neo4j 5.26 server for development and tests (Bolt on 127.0.0.1, user "
    "neo4j, password from NEO4J_PASSWORD; needs Java 17+ and Maven).",
    no_args_is_help=True,
)
app.add_typer(neo4j_app, name="neo4j")

err = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable)


def user_errors(fn: F) -> F:
    """Turn an InputError into one paragraph on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            err.print(f"[bold red]error:[/] {exc.message}", markup=True)
            raise typer.Exit(EXIT_INPUT_ERROR) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields ``update(done, total)``."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err, transient=False, disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


Workspace_ = Annotated[Path, typer.Option("--workspace", "-w", help="The workspace folder.")]


@app.command()
@user_errors
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic cohort into.")],
    patients: Annotated[int, typer.Option(min=1, help="Number of patients.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
    image_size: Annotated[int, typer.Option(min=64, help="Slice width and height (px).")] = 256,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Processes drawing patients (default: up to 2 from 50 patients); the "
                    "files are the same for any number.")] = None,
) -> None:
    """Write a synthetic cohort in the exact DeepLesion format.

    DL_info.csv + Images_png, plus records.csv, outcomes.csv, studies.csv and truth.json
    (the planted answers, which the pipeline never reads).
    """
    from patientgraph.synth import generate

    try:
        with progress_bar("synth") as update:
            summary = generate(out, n_patients=patients, seed=seed, image_size=image_size,
                               progress=update, workers=workers)
    except FileExistsError as exc:
        raise InputError(out, str(exc).split(";")[0].replace(f"{out} ", ""),
                         "choose a new or empty folder, or remove this one") from None
    except ValueError as exc:
        raise InputError(None, str(exc), "see patientgraph synth --help") from None
    err.print(_summary_line("wrote", summary))


@ingest_app.command("deeplesion")
@user_errors
def ingest_deeplesion(
    info: Annotated[Path, typer.Option(help="DL_info.csv of the release.")],
    images: Annotated[Path, typer.Option(help="The Images_png folder.")],
    workspace: Workspace_,
    records: Annotated[
        Path | None, typer.Option(help="Covariates, CSV or Parquet, keyed by Patient_index "
                                  "or patient_id.")] = None,
    outcomes: Annotated[
        Path | None, typer.Option(help="Survival outcomes keyed by Patient_index or "
                                  "patient_id.")] = None,
    studies: Annotated[
        Path | None, typer.Option(help="Study days: Patient_index, Study_index, day "
                                  "(days since the first study).")] = None,
    time_col: Annotated[str, typer.Option(help="Follow-up time column (days).")] = "time_days",
    event_col: Annotated[str, typer.Option(help="Event column (1 event, 0 censored).")] = "event",
    force: Annotated[bool, typer.Option(help="Re-ingest even if nothing changed.")] = False,
) -> None:
    """Ingest an archive in the DeepLesion format (DL_info.csv + Images_png)."""
    from patientgraph.deeplesion import ingest_deeplesion as run
    from patientgraph.workspace import Workspace

    with Workspace(workspace).lock(), progress_bar("checking key slices") as update:
        summary = run(info, images, workspace, records=records, outcomes=outcomes,
                      studies=studies, time_col=time_col, event_col=event_col, force=force,
                      progress=update)
    err.print(_summary_line("ingested", summary))


@ingest_app.command("table")
@user_errors
def ingest_table(
    lesions: Annotated[Path, typer.Option(help="Lesions CSV pointing at NIfTI files or "
                                          "DICOM series folders.")],
    workspace: Workspace_,
    records: Annotated[Path | None, typer.Option(help="Covariates keyed by patient_id.")] = None,
    outcomes: Annotated[Path | None, typer.Option(help="Outcomes keyed by patient_id.")] = None,
    time_col: Annotated[str, typer.Option(help="Follow-up time column (days).")] = "time_days",
    event_col: Annotated[str, typer.Option(help="Event column (1 event, 0 censored).")] = "event",
    force: Annotated[bool, typer.Option(help="Re-ingest even if nothing changed.")] = False,
) -> None:
    """Ingest a lesions table whose rows point at NIfTI volumes or DICOM series."""
    from patientgraph.table_ingest import ingest_table as run
    from patientgraph.workspace import Workspace

    with Workspace(workspace).lock(), progress_bar("reading volume headers") as update:
        summary = run(lesions, workspace, records=records, outcomes=outcomes,
                      time_col=time_col, event_col=event_col, force=force, progress=update)
    err.print(_summary_line("ingested", summary))


@app.command()
@user_errors
def run(
    workspace: Workspace_,
    stages: Annotated[
        str | None, typer.Option(help="Comma-separated stages (default: all available).")
    ] = None,
    graph: Annotated[
        str | None, typer.Option(help="Graph URI: a folder (embedded) or neo4j://host:port.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rerun stages even if nothing changed.")] = False,
    config: Annotated[str | None, typer.Option(
        help='Per-stage options: a JSON file, or an inline JSON object such as '
        '\'{"embed": {"preset": "fast"}}\'.')] = None,
) -> None:
    """Run the pipeline stages on an ingested workspace."""
    from patientgraph.app.pipeline import run_pipeline

    results = run_pipeline(workspace, stages=stages, graph=graph, force=force,
                           config=_read_config(config), echo=lambda m: err.print(m))
    if not results:
        from patientgraph.app.pipeline import STAGES

        err.print(f"nothing to run: no stage was chosen (choose from {', '.join(STAGES)})")


CONFIG_EXAMPLE = '{"embed": {"preset": "fast"}, "index": {"k": 10}}'


def _read_config(value: str | None) -> dict | None:
    """The --config options: an inline JSON object (``{...}``) or the path of a JSON file."""
    if value is None:
        return None
    inline = value.lstrip().startswith("{")
    path = None if inline else Path(value)
    source = "the inline --config value" if inline else "the file"
    try:
        config = json.loads(value if inline else path.read_text())
    except FileNotFoundError:
        raise InputError(path, "the --config file does not exist",
                         "check the --config path, or give an inline JSON object such as "
                         f"'{CONFIG_EXAMPLE}'") from None
    except OSError as exc:
        raise InputError(path, f"the --config file cannot be read ({exc.strerror})",
                         "give a readable JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = (f"{exc.msg}, line {exc.lineno} column {exc.colno}"
                 if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text")
        raise InputError(path, f"{source} is not valid JSON ({where})",
                         f"write an object of stage options, e.g. '{CONFIG_EXAMPLE}'") from None
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        raise InputError(path, f"{source} is not an object of stage option objects",
                         f"write e.g. '{CONFIG_EXAMPLE}'")
    return config


def _known_id(workspace: Path, typed: str | None, table: str) -> str | None:
    """``typed`` as the workspace's own id: ``--patient 1`` finds ``000001`` when that is
    the one known id differing from it by formatting alone (see
    :func:`patientgraph.schema.resolve_id`). Anything else goes on unchanged, to be refused
    by the command with its unknown-id message."""
    from patientgraph.schema import resolve_id
    from patientgraph.workspace import Workspace

    ws = Workspace(workspace)
    if typed is None or not ws.table_path(table).exists():
        return typed
    column = {"patients": "patient_id", "lesions": "lesion_id"}[table]
    return resolve_id(typed, ws.table(table)[column])


def _parse_weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    weights = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise InputError(None, f"--weights part {part!r} is not name=number",
                             "write e.g. --weights imaging=1,records=0.5") from None
    return weights


@app.command()
@user_errors
def similar(
    workspace: Workspace_,
    patient: Annotated[str | None, typer.Option(help="Find patients similar to this one.")]
    = None,
    lesion: Annotated[str | None, typer.Option(help="Find lesions similar to this one.")]
    = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="How many.")] = 10,
    weights: Annotated[str | None, typer.Option(
        help="Modality weights for patients, e.g. imaging=1,records=0.5.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines on stdout.")] = False,
) -> None:
    """The most similar patients (with each modality's part of the score) or lesions."""
    from embed.similar import similar_lesions, similar_patients

    if (patient is None) == (lesion is None):
        raise InputError(None, "give exactly one of --patient and --lesion",
                         "e.g. patientgraph similar --workspace W --patient 000001 -k 10")
    patient = _known_id(workspace, patient, "patients")
    lesion = _known_id(workspace, lesion, "lesions")
    if patient is not None:
        table = similar_patients(workspace, patient, k=k, weights=_parse_weights(weights))
    else:
        table = similar_lesions(workspace, lesion, k=k)
    if as_json:
        typer.echo(table.to_json(orient="records", lines=True), nl=False)
    else:
        typer.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


@app.command()
@user_errors
def forecast(
    workspace: Workspace_,
    patient: Annotated[str | None, typer.Option(help="Forecast this patient's lesions.")]
    = None,
    on_day: Annotated[float | None, typer.Option(
        "--on-day", help="The day to forecast (days since the patient's first study; after "
        "its last).")] = None,
    targets: Annotated[Path | None, typer.Option(
        help="CSV of patient_id,day rows to forecast in one go (with --out).")] = None,
    out: Annotated[Path | None, typer.Option(help="CSV to write the batch forecasts to.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]
    = False,
) -> None:
    """Where each tracked lesion is heading: its long diameter at a later day, with an 80%
    interval, and the patient's sum of long diameters with a RECIST-style category."""
    from discovery.results import forecast_batch, forecast_patient
    from patientgraph.atomic import atomic_path

    if (patient is None) == (targets is None):
        raise InputError(None, "give either --patient with --on-day, or --targets with --out",
                         "e.g. patientgraph forecast --workspace W --patient 000001 --on-day "
                         "400, or --targets targets.csv --out forecasts.csv")
    if targets is not None:
        if out is None or on_day is not None or as_json:
            raise InputError(None, "--targets writes a CSV: give --out, and no --on-day or "
                             "--json", "e.g. patientgraph forecast --workspace W --targets "
                             "targets.csv --out forecasts.csv")
        table = forecast_batch(workspace, targets)
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
        asked = len(table[["patient_id", "day"]].drop_duplicates())
        err.print(f"wrote {len(table)} track forecasts for {asked} targets to {out}")
        return
    if on_day is None or out is not None:
        raise InputError(None, "--patient needs --on-day (and prints; --out is for --targets)",
                         "e.g. patientgraph forecast --workspace W --patient 000001 "
                         "--on-day 400")
    result = forecast_patient(workspace, _known_id(workspace, patient, "patients"), on_day)
    tracks = result.tracks.drop(columns=["patient_id"])
    if as_json:
        typer.echo(json.dumps({
            "patient_id": str(result.tracks["patient_id"].iloc[0]), "day": result.day,
            "sum_long_mm": result.sum_long_mm, "sum_lo": result.sum_lo,
            "sum_hi": result.sum_hi, "baseline_sum": result.baseline_sum,
            "nadir_sum": result.nadir_sum, "category": result.category,
            "tracks": tracks.to_dict(orient="records")}))
        return
    typer.echo(tracks.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    typer.echo(f"sum of long diameters on day {result.day:g}: {result.sum_long_mm:.1f} mm "
               f"(80% interval {result.sum_lo:.1f}-{result.sum_hi:.1f}); baseline "
               f"{result.baseline_sum:.1f}, nadir {result.nadir_sum:.1f}: {result.category}")


@app.command()
@user_errors
def render(
    workspace: Workspace_,
    lesion: Annotated[str, typer.Option(help="The lesion_id to show (drawn in yellow with "
                                        "its id; other lesions on its slice in red).")],
    out: Annotated[Path, typer.Option(help="PNG file to write.")],
    window: Annotated[str, typer.Option(help="CT window: lung, soft_tissue or bone.")] = (
        "soft_tissue"),
) -> None:
    """Draw a lesion's key slice with its box and RECIST axes into a PNG."""
    from patientgraph.imaging import WINDOWS
    from patientgraph.render import render_lesion

    if window not in WINDOWS:
        raise InputError(None, f"unknown window {window!r}.{did_you_mean(window, WINDOWS)}",
                         f"choose one of {', '.join(WINDOWS)}")
    render_lesion(workspace, _known_id(workspace, lesion, "lesions"), out, window=window)
    err.print(f"wrote {out}")


@app.command("info")
@user_errors
def info_cmd(workspace: Workspace_, as_json: Annotated[bool, typer.Option("--json")] = False):
    """Show what a workspace holds: cohort counts and the stages run."""
    from patientgraph.workspace import Workspace

    ws = Workspace(workspace)
    manifest = ws.manifest()
    if not manifest.get("stages"):
        raise InputError(workspace, "this is not a PatientGraph workspace (no manifest.json)",
                         "ingest an archive into it first")
    if as_json:
        typer.echo(json.dumps(manifest, indent=2))
        return
    rows = [("stage", "finished (UTC)", "seconds", "counts")]
    for name, rec in manifest["stages"].items():
        seconds = rec.get("seconds")
        rows.append((name, _utc_minute(rec.get("finished")),
                     f"{seconds:.1f}" if isinstance(seconds, (int, float)) else "-",
                     _stage_counts(name, rec.get("summary") or {})))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        typer.echo("  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                              row[2].rjust(widths[2]), row[3]]).rstrip())


def _utc_minute(stamp: object) -> str:
    """An ISO time stamp as ``YYYY-MM-DD HH:MM`` in UTC; "-" for a stage still running."""
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(str(stamp))
    except ValueError:
        return "-"
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M")


def _stage_counts(stage: str, summary: dict) -> str:
    """A few key counts of a stage's summary, e.g. "patients 30, studies 70, lesions 199"."""
    def num(*keys: str) -> object:
        value: object = summary
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    training = summary.get("training") if isinstance(summary.get("training"), dict) else {}
    counts: list[tuple[str, object]] = {
        "ingest": [("patients", num("patients")), ("studies", num("studies")),
                   ("lesions", num("lesions"))],
        "embed": [("lesions embedded", num("lesions")), ("failed", num("failed_lesions")),
                  ("patients", num("patients")),
                  ("training epochs", num("training", "epochs_run"))],
        "index": [("lesion vectors", num("lesions")), ("patient vectors", num("patients"))],
        "graph": [("nodes", _total(num("patients"), num("studies"), num("lesions"))),
                  ("similarity edges", _total(num("lesion_edges"), num("patient_edges")))],
        "discover": [("clusters", num("clusters")), ("biomarkers", num("graph", "Biomarker")),
                     ("candidates", num("candidates")), ("findings q<0.05",
                                                         num("findings_q05")),
                     ("tracks forecast", num("forecast_tracks"))],
    }.get(stage, [(k.replace("_", " "), num(k)) for k in list(summary)[:4]])
    parts = [f"{label} {value:g}" for label, value in counts if value is not None]
    if stage == "embed" and "checkpoint" in training:
        parts.append("encoder from a checkpoint")
    return ", ".join(parts)


def _total(*values: object) -> int | None:
    """The sum of the counts, or None when one is missing."""
    return None if any(v is None for v in values) else int(sum(values))  # type: ignore[arg-type]


@app.command()
@user_errors
def serve(
    workspace: Workspace_,
    host: Annotated[str, typer.Option(help="Address to listen on. Without credentials only "
                                      "127.0.0.1, ::1 or localhost; any other address needs "
                                      "$PATIENTGRAPH_TOKEN, or $PATIENTGRAPH_USER and "
                                      "$PATIENTGRAPH_PASSWORD.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8050,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Threads of the waitress server (production WSGI server; default "
        "8).")] = None,
    dev: Annotated[bool, typer.Option(
        "--dev", help="Serve with Flask's development server instead of waitress.")] = False,
    graph: Annotated[str | None, typer.Option(
        help="Graph URI: a folder or neo4j://host:port (default: the workspace's graph).")]
    = None,
) -> None:
    """The Dash explorer: similar patients, lesion map, cohorts, biomarkers, Cypher queries."""
    import signal

    from dashboards.server import serve as run_server

    # Ctrl+C stops the server even where it was started with SIGINT ignored: a shell
    # without job control starts its background jobs so (POSIX), and Python then installs
    # no KeyboardInterrupt handler; a script's `patientgraph serve &` would not stop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run_server(workspace, host=host, port=port, workers=workers, dev=dev, graph=graph,
               echo=lambda m: err.print(m, markup=False))


def _server_errors(fn: F) -> F:
    """A ServerError (no Java, no password, port taken) is the user's to fix: exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from graphdb.server import ServerError

        try:
            return fn(*args, **kwargs)
        except ServerError as exc:
            err.print(f"error: {exc}")
            raise typer.Exit(EXIT_INPUT_ERROR) from None

    return wrapper  # type: ignore[return-value]


@neo4j_app.command("start")
@_server_errors
def neo4j_start(
    port: Annotated[int | None, typer.Option(help="Bolt port (default $NEO4J_PORT or 7687).")]
    = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (default in the state "
                                                  "folder $PATIENTGRAPH_NEO4J_HOME).")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for Bolt.")] = 120.0,
) -> None:
    """Build the launcher on first use, start the server, wait until Bolt accepts."""
    from graphdb import server

    info = server.start(data_dir, port, wait)
    state = "already running" if info.already_running else "started"
    typer.echo(f"neo4j {state}: {info.uri} (pid {info.pid})")


@neo4j_app.command("stop")
@_server_errors
def neo4j_stop() -> None:
    """Stop the local server (SIGTERM, then SIGKILL after a timeout)."""
    from graphdb import server

    typer.echo("neo4j stopped" if server.stop() else "neo4j was not running")


@neo4j_app.command("status")
@_server_errors
def neo4j_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Say whether the local server runs (exit code 0) or not (exit code 3)."""
    from graphdb import server

    st = server.status()
    if as_json:
        typer.echo(json.dumps(st, indent=1))
    else:
        typer.echo(f"neo4j running: {st['uri']} (pid {st['pid']})" if st["running"]
                   else "neo4j stopped")
    raise typer.Exit(0 if st["running"] else 3)


def _summary_line(verb: str, summary: dict) -> str:
    if summary.get("skipped"):
        return "up to date: inputs unchanged since the last ingest (use --force to redo it)"
    parts = [f"{k.replace('_', ' ')}: {v}" for k, v in summary.items()
             if k not in ("skipped",) and not isinstance(v, (dict, list))]
    return f"{verb} " + ", ".join(parts)


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="patientgraph")
    except KeyboardInterrupt:
        err.print("interrupted; the workspace is unchanged by the unfinished stage")
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == EXIT_INPUT_ERROR:
            # The message is out and nothing was written. Leave without the interpreter's
            # teardown, where a native library's destructors (torch's, seen rarely) can
            # abort and turn a user's mistake into a crash with another exit code.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INPUT_ERROR)
        raise


if __name__ == "__main__":
    main()
