"""Command line: argument parsing and printing only; every command calls one library function.

Exit codes: 0 every named input was processed; 1 an unexpected failure (one line; ``-v`` shows the
traceback); 2 a usage, config or data error (one line naming the file, row or key); 3 some inputs failed
(``predict``: files that could not be read, listed on stderr; ``--strict`` makes the first one an error);
4 a model over the complexity or INT8 accuracy-drop limits it was asked to meet; 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path

from rich.text import Text

from . import __version__
from .console import Console, PrintableFormatter, show, stderr_console
from .errors import AudioclfError, BudgetExceeded

# soft_wrap: paths and error messages stay on one line (greppable), whatever the terminal width. markup off:
# a path or message with [brackets] is printed as it is; colours are given as styles (rich Text).
out = Console(soft_wrap=True, markup=False)
err = stderr_console()

EXIT_OK, EXIT_UNEXPECTED, EXIT_ERROR, EXIT_SOME_INPUTS_FAILED, EXIT_OVER_BUDGET = 0, 1, 2, 3, 4


def _split_positionals(values: list[str]) -> tuple[str | None, list[str]]:
    """``train [CONFIG] [key=value ...]``: the first item without '=' is the config file/recipe."""
    config, overrides = None, []
    for value in values:
        if "=" in value:
            overrides.append(value)
        elif config is None:
            config = value
        else:
            raise AudioclfError(f"unexpected argument '{value}': expected key=value overrides after the config")
    return config, overrides


def _print_results(run_dir: Path) -> None:
    from .console import per_group_table, results_table
    from .runs import RunDir

    summary = RunDir(run_dir).read_summary()
    show(out, results_table(summary.get("metrics", {}), title=f"Results ({summary.get('task')}, "
                                f"best epoch {summary.get('best_epoch')})"))
    group_table = per_group_table(summary.get("metrics", {}).get("test", {}))
    if group_table is not None:
        show(out, group_table)
    from .runs.diagnostics import diagnose

    for finding in diagnose(summary, RunDir(run_dir).read_metrics()):  # also in report.md
        err.print(Text.assemble(("note:", "yellow"), " ", finding.replace("**", "").replace("`", "")), highlight=False)
    skipped = summary.get("skipped", [])
    if skipped:
        out.print(f"{len(skipped)} file(s) skipped:", style="yellow")
        for entry in skipped[:20]:
            out.print(f"  {entry['path']}: {entry['reason']}")
    out.print(f"run directory: {run_dir}")


def _print_predictions(predictions, predictor, top_k: int, truth=None) -> None:
    for i, pred in enumerate(predictions):
        if pred.probs is None:  # on stderr: stdout stays the predictions a script reads
            err.print(Text.assemble(f"{pred.path}: ", ("skipped", "red"), f" ({pred.error})"), highlight=False)
            continue
        ranked = ", ".join(f"{label} {p:.3f}" for label, p in predictor.top_k(pred.probs, top_k))
        known = f"  (true: {', '.join(truth[i])})" if truth is not None else ""
        if pred.abstained:
            decided = "  -> abstained (below --min-confidence)"
        elif predictor.task == "multi_label":  # the decisions at the run's thresholds, beside the ranking
            decided = f"  -> {', '.join(pred.labels) or '-'}"
        else:
            decided = ""
        out.print(f"{pred.path}: {ranked}{decided}{known}")


def cmd_demo(args) -> None:
    from .console import ConsoleReporter
    from .deploy.predictor import Predictor
    from .workflows.demo import demo_test_files, run_demo

    kind = "multi-label" if args.multi_label else "single-label"
    err.print(f"audioclf demo ({kind}): generating data and training in {args.out}")
    run_dir = run_demo(args.out, multi_label=args.multi_label, n_per_class=args.clips_per_class,
                       overrides=args.overrides,
                       reporter=ConsoleReporter(err))
    _print_results(run_dir)
    predictor = Predictor.from_run(run_dir)
    picked = demo_test_files(run_dir)
    out.print("Predictions on a few test files (top 3):")
    _print_predictions(predictor.predict_files([path for path, _ in picked]), predictor, 3,
                       truth=[labels for _, labels in picked])


def cmd_train(args) -> None:
    from .config import load_config
    from .console import ConsoleReporter
    from .training.distributed import world
    from .workflows.run import run

    if args.gpus is not None:
        from .workflows.launch import check_gpus, launch

        check_gpus(args.gpus)
        flags = [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite),
                                       ("--strict", args.strict), ("--dry-run", args.dry_run)) if on]
        paths = [*(["--data", args.data] if args.data else []), *(["--out", args.out] if args.out else [])]
        launch(["train", *args.args, *paths, *flags], args.gpus, out=args.out)
        return
    config, overrides = _split_positionals(args.args)
    if args.data:
        overrides = [f"data.path={args.data}", *overrides]
    if args.out:
        overrides.append(f"out={args.out}")
    if args.strict:
        overrides.append("data.strict=true")
    result = run(load_config(config, overrides), resume=args.resume, reporter=ConsoleReporter(err),
                 overwrite=args.overwrite, dry_run=args.dry_run)
    if not world().main:  # under torchrun: rank 0 prints the results
        return
    if result.kind == "cv":
        from .console import cv_table

        show(out, cv_table(result.cv_summary))
        out.print(f"runs: {result.root}/fold_*")
        return
    for run_dir in result.runs:
        _print_results(run_dir)


def cmd_shard(args) -> None:
    from .config import load_config
    from .workflows.shard import shard

    config, overrides = _split_positionals(args.args)
    if args.data:
        overrides = [f"data.path={args.data}", *overrides]
    index = shard(load_config(config, overrides), args.out, items_per_shard=args.items_per_shard)
    splits = index["splits"]
    counts = " / ".join(f"{split} {sum(s['items'] for s in splits[split])}" for split in ("train", "val", "test"))
    out.print(f"{sum(len(v) for v in splits.values())} shards in {args.out} ({counts} items, "
              f"{index['sample_rate']} Hz, {index['clip_seconds']:g}-s clips)")
    out.print(f"train from them: audioclf train --data {args.out}  (or torchrun ... -m audioclf train --data ...)")


def _data_config(args):
    """The config of ``describe`` and ``doctor``: CONFIG and overrides, ``--data`` and ``--strict``."""
    from .config import load_config

    config, overrides = _split_positionals(args.args)
    if args.data:
        overrides = [f"data.path={args.data}", *overrides]
    if args.strict:
        overrides.append("data.strict=true")
    return load_config(config, overrides)


def cmd_describe(args) -> None:
    from .workflows.describe import console_summary, describe_data

    columns = [name.strip() for name in args.columns.split(",") if name.strip()] if args.columns else []
    description = describe_data(_data_config(args), args.out, columns, stage=args.stage)
    for line in console_summary(description):
        out.print(line, highlight=False)


def _evaluate_events(args) -> None:
    """``evaluate RUN --strong labels.csv``: the run's events scored against strong labels."""
    from .deploy.event_scores import evaluate_strong_labels
    from .deploy.predictor import Predictor
    from .files import atomic_write_text

    predictor = Predictor.from_run(args.run_dir)
    _set_event_settings(predictor, args.events_set)
    result = evaluate_strong_labels(predictor, args.strong, args.audio_root, strict=args.strict)
    for entry in result["skipped"]:
        out.print(Text.assemble(("skipped", "yellow"), f" {entry['path']}: {entry['reason']}"))
    out.print(f"events on {result['files']} recordings ({result['ground_truth_events']} labelled, "
              f"{result['detected_events']} detected, {result['classes_scored']} classes):", highlight=False)
    for key in ("event_f1", "psds1", "psds2"):
        value = result[key]
        out.print(f"  {key:<9} {'n/a' if value is None else f'{value:.4f}'}", highlight=False)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(result, indent=2) + "\n")
        out.print(f"wrote {args.json}", highlight=False)


def cmd_doctor(args) -> None:
    from .workflows.doctor import console_lines, doctor_data

    result = doctor_data(_data_config(args), args.out, args.fix, stage=args.stage, labels=not args.no_labels,
                         players=args.players)
    for line in console_lines(result):
        out.print(line, highlight=False)


def cmd_evaluate(args) -> None:
    from .console import per_group_table, results_table
    from .files import atomic_write_text
    from .workflows.evaluation import evaluate_run

    if args.strong:
        return _evaluate_events(args)
    result = evaluate_run(args.run_dir, data=args.data, split=args.split, strict=args.strict,
                          audio_root=args.audio_root)
    source = (f"the run's {args.split or 'test'} split" if args.data is None
              else f"{args.data}{f' ({args.split} rows)' if args.split else ' (every row)'}")
    column = (args.split or "test") if args.data is None else "score"
    show(out, results_table({column: result["metrics"]}, title=f"Evaluation on {result['n_items']} items of {source}"))
    if result["seen_in_training"]:
        err.print(f"{result['seen_in_training']} of these files were in the run's training or validation "
                  "split: this is not a test score", style="yellow", highlight=False)
    group_table = per_group_table(result["metrics"])
    if group_table is not None:
        show(out, group_table)
    for entry in result["skipped"]:
        out.print(Text.assemble(("skipped", "yellow"), f" {entry['path']}: {entry['reason']}"))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(result, indent=2, default=float) + "\n")
        out.print(f"wrote {args.json}", highlight=False)


def cmd_ensemble(args) -> None:
    from .console import ensemble_table
    from .workflows.evaluation import ensemble_runs

    result = ensemble_runs(args.run_dirs, data=args.data, split=args.split, weights=args.weights)
    show(out, ensemble_table(result))
    if args.json:
        from .files import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(result, indent=2, default=float) + "\n")
        out.print(f"wrote {args.json}", highlight=False)


def cmd_augment(args) -> None:
    import yaml

    from .augment.offline import augment_dataset
    from .config import load_yaml, read_yaml

    specs = []
    for text in args.transform:
        try:
            spec = load_yaml(text, f"--transform {text[:80]!r}")
        except yaml.YAMLError:
            raise AudioclfError(f"--transform {text!r}: not valid YAML (e.g. '{{name: gain, p: 1.0}}')") from None
        specs.extend(spec if isinstance(spec, list) else [spec])
    if args.transforms_file:
        loaded = read_yaml(args.transforms_file)
        specs.extend(loaded if isinstance(loaded, list) else [loaded])
    if not specs:
        raise AudioclfError("give at least one --transform (or --transforms-file)")
    manifest = _augment_sources(args)
    result = augment_dataset(manifest, args.out, specs, n_variants=args.variants, sample_rate=args.sample_rate,
                             seed=args.seed, keep_original=not args.no_original, strict=args.strict,
                             overwrite=args.overwrite)
    out.print(f"{len(result)} items ({len(manifest)} sources x {args.variants} variants"
              f"{'' if args.no_original else ' + originals'}) -> {Path(args.out) / 'manifest.csv'}")


def _augment_sources(args):
    """``audioclf augment``'s sources: --data read as --format, cut to --split, then to --subset (at most n items
    per group x label, e.g. González Poy's balanced 50 per device x location x scene of TAU 2022's training fold)."""
    import yaml

    from .config import config_from_dict, load_yaml
    from .data.importers import load_manifest
    from .data.prepare import import_data, subset_args
    from .data.splits import limit_per_group

    if args.format == "auto":
        manifest = load_manifest(args.data)
    else:
        manifest = import_data(config_from_dict({"data": {"path": args.data, "format": args.format}}))
    if args.split:
        manifest = manifest.filter(lambda item: item.split == args.split)
        if len(manifest) == 0:
            raise AudioclfError(f"--split {args.split}: no item of {args.data} is in that split")
    if args.subset:
        try:
            subset = subset_args(load_yaml(args.subset, f"--subset {args.subset[:80]!r}"), "--subset")
        except yaml.YAMLError:
            raise AudioclfError(f"--subset {args.subset!r}: not valid YAML (e.g. '{{per: [device], n: 50}}')") from None
        # limit_per_group cuts the training items alone: every source is marked as one to pick from.
        cut = limit_per_group(manifest.with_splits(["train"] * len(manifest)), seed=args.seed, **subset)
        kept = {item.id for item in cut}
        manifest = manifest.with_items([item for item in manifest if item.id in kept])
    return manifest


def cmd_synth(args) -> None:
    from .data.synth.speaker_count import source_manifest

    if args.kind == "speaker-count":
        from .data.synth.speaker_count import REPORT_SIZES, generate_speaker_count

        n = REPORT_SIZES if args.report_sizes else args.n
        if n is None:
            raise AudioclfError("give --n N (one set) or --report-sizes (100,000 / 10,000 / 10,000 per split)")
        csv_path = generate_speaker_count(source_manifest(args.source), args.out, max_speakers=args.max_speakers,
                                          n=n, seconds=args.seconds, sample_rate=args.sr, seed=args.seed,
                                          window=args.window, silence_db=args.silence_db, sexes=args.sexes,
                                          overwrite=args.overwrite)
    else:
        from .data.synth.mixtures import make_multilabel_mixtures

        if args.n is None:
            raise AudioclfError("give --n N, the number of mixtures")
        csv_path = make_multilabel_mixtures(source_manifest(args.source), args.out, n=args.n,
                                            max_events=args.max_events, seed=args.seed, seconds=args.seconds,
                                            sample_rate=args.sr, overwrite=args.overwrite, placement=args.placement)
    out.print(f"wrote {csv_path}")


def cmd_complexity(args) -> None:
    from .models.complexity import check_limits, format_report, model_complexity
    from .runs.directory import run_complexity

    folded = not args.no_fold
    if Path(args.target).is_dir():
        report = run_complexity(args.target, batchnorm_folded=folded)
    else:
        report = model_complexity(args.target, args.n_classes, args.input_shape, batchnorm_folded=folded)
    out.print(format_report(report), markup=False, highlight=False)
    check_limits(report, max_params=args.max_params, max_macs=args.max_macs)
    if args.max_params or args.max_macs:
        out.print("within the limits")


def cmd_export(args) -> None:
    from .deploy.export import export_onnx

    path = export_onnx(args.run_dir, out_path=args.out, with_frontend=args.with_frontend, opset=args.opset,
                       overwrite=args.overwrite)
    out.print(f"wrote {path} (checked against PyTorch with ONNX Runtime)")


def cmd_quantize(args) -> None:
    from .console import gate_line, quantization_table
    from .deploy.quantize import QuantizationRefused, quantize_run

    keep = args.keep_float if args.keep_float in (None, "auto") else [n.strip() for n in args.keep_float.split(",")]
    try:
        result = quantize_run(args.run_dir, calibration=args.calibration, method=args.method,
                              with_frontend=args.with_frontend, max_drop=args.max_drop, force=args.force,
                              keep_float=keep or ())
    except QuantizationRefused as refused:
        out.print(gate_line(refused.report["gate"]), highlight=False)
        raise
    show(out, quantization_table(result))
    out.print(gate_line(result["gate"]), highlight=False)
    if result["settings"]["kept_float"]:
        out.print(f"kept in float: {', '.join(result['settings']['kept_float'])}", highlight=False)
    for path in (result["fp32"]["path"], result["int8"]["path"], Path(args.run_dir) / "quantization.json"):
        out.print(f"wrote {path}", highlight=False)


def cmd_distill(args) -> None:
    from .compress.distill import distill
    from .config import load_config
    from .console import ConsoleReporter

    config, overrides = _split_positionals(args.args)
    if args.out:
        overrides.append(f"out={args.out}")
    student = load_config(config, overrides)
    run_dir = distill(args.teacher, student, T=args.T, alpha=args.alpha, reporter=ConsoleReporter(err))
    _print_results(run_dir)


def cmd_sweep(args) -> None:
    from .console import ConsoleReporter
    from .workflows.sweep import bundled_protocols, load_sweep, sweep, sweep_worker

    if args.list:
        for name, text in bundled_protocols().items():
            out.print(f"{name:<24} {text}", highlight=False)
        return
    if not args.out:
        raise AudioclfError("sweep: name the sweep folder with --out DIR")
    if args.worker is not None:  # one of --jobs N processes (started by the sweep itself)
        sweep_worker(args.out, args.storage, args.worker, ConsoleReporter(err))
        return
    source, overrides = _split_positionals(args.args)
    spec = None
    if not (args.resume or args.join):
        spec = load_sweep(source, args.grid, overrides, args.sampler, args.trials, args.metric, args.prune,
                          args.teacher)
    root = sweep(spec, args.out, jobs=args.jobs, storage=args.storage, resume=args.resume, join=args.join,
                 overwrite=args.overwrite, reporter=ConsoleReporter(err))
    from .runs.compare import compare

    written = compare([root])
    out.print(f"wrote {root / 'sweep.json'}", highlight=False)
    out.print(f"wrote {written / 'comparison.md'} (+ comparison.csv, curves.png, effects.png)", highlight=False)


def cmd_compare(args) -> None:
    from .runs.compare import compare

    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    written = compare(args.paths, args.out, metrics)
    out.print((written / "comparison.md").read_text().split("\n![")[0].strip(), highlight=False)
    out.print(f"wrote {written / 'comparison.md'}, comparison.csv, curves.png", highlight=False)


def cmd_serve(args) -> None:
    from .deploy.serve import ServeLimits, bind_warning, serve

    limits = ServeLimits(max_bytes=int(args.max_mb * 2**20), max_seconds=args.max_seconds, timeout=args.timeout,
                         read_timeout=args.read_timeout, allowed_hosts=tuple(args.allowed_host), docs=args.docs,
                         live_sessions=args.live_sessions, live_seconds=args.live_seconds)
    warning = bind_warning(args.host)
    if warning:
        err.print(warning, style="yellow")
    err.print(f"serving {args.source} on http://{args.host}:{args.port}/ (Ctrl-C stops)")
    serve(args.source, args.host, args.port, limits)


def cmd_config(args) -> None:
    from .config import describe_keys

    rows = describe_keys(args.section or None)
    width = max(len(key) for key, *_ in rows)
    for key, kind, default, comment in rows:
        out.print(f"{key:<{width}}  {kind:<20} {default!s:<12} {comment}", markup=False, highlight=False)


def _write_timeline(predictor, args) -> int:
    """``predict --timeline OUT.csv|OUT.png`` on one recording (with ``--events``: its events too, drawn on the
    picture)."""
    from .deploy.events import timeline_events, write_events_csv
    from .deploy.predictor import expand_paths

    paths = expand_paths(args.paths)
    suffix = Path(args.timeline).suffix.lower()
    if len(paths) != 1 or suffix not in (".csv", ".png") or args.ensemble:
        raise AudioclfError("--timeline OUT.csv|OUT.png: one recording (no --ensemble); "
                            f"got {len(paths)} file(s) and {args.timeline}")
    events_path = _events_csv(args) if args.events else None
    timeline = predictor.timeline(paths[0])
    events = None
    if events_path:
        events = timeline_events(paths[0].name, timeline, predictor.event_settings, predictor.decision_thresholds())
        write_events_csv(events, events_path)
        out.print(f"wrote {args.events} ({len(events)} events)", highlight=False)
    if suffix == ".csv":
        timeline.to_csv(args.timeline)
    else:
        from .runs.plots import plot_timeline

        plot_timeline(timeline.starts, timeline.window, timeline.probs, timeline.classes, Path(args.timeline),
                      f"{paths[0].name}: {len(timeline.starts)} windows of {timeline.window:g} s",
                      [(e.label, e.onset, e.offset) for e in events or []])
    out.print(f"wrote {args.timeline} ({len(timeline.starts)} windows of {timeline.window:g} s)")
    return EXIT_OK


def _set_event_settings(predictor, overrides: list[str]) -> None:
    """``--events-set events.KEY=VALUE`` over the run's own ``events`` settings."""
    from .deploy.events import events_config

    if overrides:
        predictor.event_settings = events_config(predictor.event_settings, overrides)


def _events_csv(args) -> str:
    if args.ensemble or Path(args.events).suffix.lower() != ".csv":
        raise AudioclfError(f"--events OUT.csv: a .csv file, without --ensemble; got {args.events}")
    return args.events


def _write_events(predictor, args) -> int:
    """``predict --events OUT.csv``: the sound events of each recording, in the DCASE columns."""
    from .deploy.events import write_events_csv
    from .deploy.predictor import expand_paths

    out_path = _events_csv(args)  # checked before any recording is scored
    events = [event for path in expand_paths(args.paths) for event in predictor.events(path)]
    write_events_csv(events, out_path)
    out.print(f"wrote {args.events} ({len(events)} events)", highlight=False)
    return EXIT_OK


_STDIN_ONLY = ("format", "rate", "channels", "hop", "json")


def _check_stdin_options(args) -> bool:
    """Whether the input is stdin (``-`` alone); options that need files (or that stdin needs) are one-line errors
    before the model is loaded."""
    stdin = "-" in args.paths
    if stdin and len(args.paths) > 1:
        raise AudioclfError(f"'-' (stdin) is the only input when given; got {' '.join(args.paths)}")
    if stdin:
        files_only = {"--csv": args.csv, "--submission": args.submission, "--timeline": args.timeline,
                      "--ensemble": args.ensemble, "--tta": args.tta != 1,
                      "--aggregate": args.aggregate != "mean", "--top-k": args.top_k != 3, "--strict": args.strict}
        given = [flag for flag, on in files_only.items() if on]
        if given:
            raise AudioclfError(f"predict RUN - (stdin) prints each window as it comes: {', '.join(given)} "
                                "work on files only")
    else:
        # `is not`, not `in (None, False)`: a --hop 0 is given too (0 == False)
        given = [f"--{name}" for name in _STDIN_ONLY if getattr(args, name) is not None
                 and getattr(args, name) is not False]
        if given:
            raise AudioclfError(f"{', '.join(given)}: options of predict RUN - (audio from stdin)")
    return stdin


def _predict_stdin(predictor, args) -> int:
    """``predict RUN -``: audio piped in (a WAV stream or raw PCM), one line per window printed and flushed the
    moment the window's last sample has been read (``arecord ... | audioclf predict RUN -``). With ``--events``,
    the stream's events are written when it ends (EOF or Ctrl-C); its windows are kept till then (C numbers
    each)."""
    from .deploy.events import write_events_csv
    from .deploy.live import live_events

    windows = None
    if args.events:
        _events_csv(args)  # checked before any audio is read
        windows = []
    interrupted = None
    try:
        for window in _print_stdin_windows(predictor, args):
            if windows is not None:
                windows.append(window)
    except KeyboardInterrupt as exc:  # the last window was printed; the events so far are written all the same
        interrupted = exc
    if windows is not None:
        events = live_events("stdin", windows, predictor)
        write_events_csv(events, args.events)
        err.print(f"wrote {args.events} ({len(events)} events)", highlight=False)
    if interrupted is not None:
        raise interrupted
    return EXIT_OK


def _print_stdin_windows(predictor, args):
    """Each window of stdin, once its line is printed; stops when stdout's reader has gone."""
    from .data.pcm import open_pcm_stream
    from .deploy.live import LiveStream, score_byte_stream

    if os.isatty(sys.stdin.fileno()):  # nothing piped in: keystrokes would be read as samples
        raise AudioclfError("stdin is a terminal: pipe audio in, e.g. arecord -f S16_LE -r 16000 | audioclf predict "
                            f"{args.run_dir} -")
    # os.read returns what has arrived; sys.stdin.buffer.read(n) would wait until n bytes are in.
    read = functools.partial(os.read, sys.stdin.fileno())
    decoder, first = open_pcm_stream(read, args.format, args.rate, args.channels, source="stdin")
    live = LiveStream(predictor, decoder.rate, args.hop)
    err.print(f"stdin: {decoder.form} {decoder.rate} Hz, {decoder.channels} channel(s); windows of "
              f"{live.clip / live.rate:g} s every {live.hop / live.rate:g} s"
              + ("" if args.json else "; columns: start end labels top-class top-probability"), highlight=False)
    for window in score_byte_stream(read, decoder, live, first):
        top = int(window.probabilities.argmax())
        if args.json:
            line = json.dumps({"start": round(window.start, 4), "end": round(window.end, 4),
                               "labels": list(window.labels),
                               "probabilities": {c: round(float(p), 4) for c, p in
                                                 zip(predictor.classes, window.probabilities)}})
        else:  # tab-separated; '-': no label (an abstention, or no class over its threshold)
            line = (f"{window.start:.3f}\t{window.end:.3f}\t{','.join(window.labels) or '-'}\t"
                    f"{predictor.classes[top]}\t{window.probabilities[top]:.3f}")
        # Written and flushed at once, not through rich (which expands tabs): a reader sees each window as it comes.
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # the reader stopped (`| head -3`): so do we, quietly, as other filters do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's own flush must not fail
            return
        yield window


def cmd_predict(args) -> None:
    from .deploy.onnx_predictor import load_predictor
    from .deploy.predictor import check_tta, write_predictions_csv

    tta = check_tta(args.tta)  # before loading anything: a bad --tta is a one-line error
    stdin = _check_stdin_options(args)
    predictor = load_predictor(args.run_dir, tta=tta)
    predictor.min_confidence = args.min_confidence  # an ensemble decides with its first member's decisions
    _set_event_settings(predictor, args.events_set)
    if stdin:
        return _predict_stdin(predictor, args)
    if args.timeline:
        return _write_timeline(predictor, args)
    if args.events:
        return _write_events(predictor, args)
    if args.ensemble:
        from .deploy.predictor import EnsemblePredictor

        members = [args.run_dir, *args.ensemble]
        predictor = EnsemblePredictor([predictor, *(load_predictor(m, tta=tta) for m in args.ensemble)], members)
    started = time.perf_counter()
    predictions = predictor.predict_files(args.paths, aggregate=args.aggregate)
    seconds = time.perf_counter() - started
    failed = [pred for pred in predictions if pred.probs is None]
    if failed and args.strict:
        raise AudioclfError(f"{failed[0].path}: {failed[0].error}")
    _print_predictions(predictions, predictor, args.top_k)
    abstained = sum(pred.abstained for pred in predictions)
    if args.min_confidence is not None:  # on stderr: stdout stays the predictions a script reads
        err.print(f"{abstained} of {len(predictions)} file(s) abstained (top probability below "
                  f"{args.min_confidence:g})", highlight=False)
    if tta > 1:  # its cost, on stderr: stdout stays the predictions a script reads
        err.print(f"tta {tta}: {tta}x the compute (each window averaged over {tta} time-shifted copies); "
                  f"{seconds / max(1, len(predictions)):.3f} s per file", highlight=False)
    if args.submission:
        from .deploy.submission import write_submission

        if not args.csv:
            raise AudioclfError("--submission needs --csv OUT (where to write the submission)")
        write_submission(predictions, predictor.classes, args.submission, args.csv)
        out.print(f"wrote submission {args.csv}")
    elif args.csv:
        write_predictions_csv(args.csv, predictions, predictor.classes)
        out.print(f"wrote {args.csv}")
    if failed:
        err.print(f"{len(failed)} of {len(predictions)} file(s) could not be read", highlight=False)
        return EXIT_SOME_INPUTS_FAILED
    return EXIT_OK


class _Help(argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help (when it has one worth saying); epilogs kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


_TRAIN_EPILOG = """\
examples:
  audioclf train --data clips/                       zero-config: everything inferred, see config.yaml
  audioclf train --data meta.csv train.epochs=30 model.name=cnn6 model.weights=pretrained
  audioclf train demo --out runs/demo                a bundled recipe: {recipes}
  audioclf train --out runs/demo --resume train.epochs=40
  audioclf train --data clips/ --dry-run             the plan and its estimated wall time, nothing trained
  audioclf train --data clips/ train.max_minutes=30  stops after 30 minutes with a scored best checkpoint
  audioclf train --data clips/ --out runs/big --gpus 4   4 GPUs, one process each (torchrun); on several machines:
      torchrun --nnodes 2 --nproc-per-node 4 --rdzv-endpoint HOST:29500 -m audioclf train --data clips/ ...

most used keys (audioclf config --list SECTION shows them all, with defaults):
  data.path data.split data.group data.clip_seconds data.sample_rate data.trim_silence
  model.name model.weights model.freeze features.n_mels
  train.epochs train.batch_size train.lr train.time_budget train.frozen_embeddings augment.mixup_alpha
"""


_DESCRIBE_EPILOG = """\
examples:
  audioclf describe --data clips/ --out describe/                  the splits zero-config train would draw
  audioclf describe --data meta.csv data.group=speaker --out d/    speakers kept apart, as train would with it
  audioclf describe dcase2022_task1 data.root=TAU/ --out d/        a recipe's data and splits
only file headers are read (nothing is decoded); data.md holds the numbers behind each picture
"""


_SWEEP_EPILOG = """\
examples:
  audioclf sweep demo --grid train.batch_size=16,32,64 --grid train.epochs=3,5,7 --out sweeps/be data.path=clips/
  audioclf sweep s2_batch_epochs data.root=genres/ --out sweeps/s2 --jobs 2
  audioclf sweep s4_kd_temperature --teacher runs/teacher data.root=TAU/ --out sweeps/kd
  audioclf sweep --out sweeps/be --resume                finishes only the trials that did not finish
  audioclf sweep --list                                  the bundled protocols (the reference solutions' tables)
"""


def build_parser() -> argparse.ArgumentParser:
    from .config import recipe_dir

    parser = argparse.ArgumentParser(prog="audioclf", description="Train, evaluate and deploy audio classifiers.",
                                     epilog="exit codes: 0 done, 1 unexpected failure, 2 usage/config/data error, "
                                            "3 some inputs failed, 4 over a complexity or INT8 accuracy-drop limit, 130 interrupted")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging and tracebacks")
    parser.add_argument("--version", action="version", version=f"audioclf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=_Help, **kwargs)

    run_dir_help = "a run directory (what train wrote: config.yaml, checkpoints/, summary.json)"

    demo = command("demo", "generate a synthetic dataset, train, evaluate and predict")
    demo.add_argument("--out", default="demo_run", help="output folder (data/ and run/); replaced when run again")
    demo.add_argument("--multi-label", action="store_true", help="mixtures of 1-3 classes per clip")
    demo.add_argument("--clips-per-class", type=int, default=100, help="generated clips per class")
    demo.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. train.epochs=5)")
    demo.set_defaults(func=cmd_demo)

    recipes = ", ".join(sorted(p.stem for p in recipe_dir().glob("*.yaml")))
    train = command("train", "train on a folder/CSV or from a config recipe",
                    epilog=_TRAIN_EPILOG.format(recipes=recipes))
    train.add_argument("args", nargs="*", metavar="[CONFIG] [key=value]",
                       help="YAML config or bundled recipe name, then overrides such as train.epochs=20")
    train.add_argument("--data", help="folder with one sub-folder per class, or a CSV (fname,labels[,split,...])")
    train.add_argument("--out", help="run directory (default: runs/<time>-<model>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the earlier run in --out (without it, a non-empty --out is refused)")
    train.add_argument("--strict", action="store_true", help="a bad audio file is an error instead of a skip")
    train.add_argument("--dry-run", action="store_true",
                       help="read the data, time a few steps, print the plan (header, groups per split, estimated "
                            "wall time) and stop: nothing is trained or written")
    train.add_argument("--gpus", type=int, metavar="N",
                       help="train on N GPUs of this machine (N processes started by torchrun, one per GPU)")
    train.set_defaults(func=cmd_train)

    shard = command("shard", "decode a dataset once into WebDataset tar shards that training streams")
    shard.add_argument("args", nargs="*", metavar="[CONFIG] [key=value]",
                       help="config or recipe and overrides, as for train (data.*: the items, splits, rate, trimming)")
    shard.add_argument("--data", help="folder with one sub-folder per class, or a CSV")
    shard.add_argument("--out", required=True, help="folder for the shards and shards.json")
    shard.add_argument("--items-per-shard", type=int, default=1000, help="items per tar file (default 1000)")
    shard.set_defaults(func=cmd_shard)

    describe = command("describe", "draw the data before training: class counts, durations, sample rates, labels "
                       "per clip and metadata columns per split", epilog=_DESCRIBE_EPILOG)
    describe.add_argument("args", nargs="*", metavar="[CONFIG] [key=value]",
                          help="config or recipe and overrides, as for train (data.*: the items and how they are split)")
    describe.add_argument("--data", help="folder with one sub-folder per class, or a CSV (fname,labels[,split,...])")
    describe.add_argument("--out", required=True, help="folder for data.md and the PNGs (replaced when run again)")
    describe.add_argument("--columns", metavar="COL[,COL]",
                          help="more metadata columns to describe (device, location, city, speaker, sex, sexes, "
                               "gender, group and the split's data.group are described whenever the data has them)")
    describe.add_argument("--stage", metavar="NAME", help="a recipe in stages: the data of this stage (default: the first)")
    describe.add_argument("--strict", action="store_true", help="an unreadable audio file is an error instead of a skip")
    describe.set_defaults(func=cmd_describe)

    doctor = command("doctor", "check the data before training: undecodable, silent or clipped audio, exact and near "
                     "duplicates, leaks between splits, conflicting labels, groups in two splits")
    doctor.add_argument("args", nargs="*", metavar="[CONFIG] [key=value]",
                        help="config or recipe and overrides, as for train (data.*: the items and how they are split)")
    doctor.add_argument("--data", help="folder with one sub-folder per class, or a CSV (fname,labels[,split,...])")
    doctor.add_argument("--out", help="folder for doctor.md, doctor.html (self-contained: players and spectrograms "
                        "embedded) and the PNGs")
    doctor.add_argument("--players", type=int, metavar="N", help="doctor.html: the first N findings get "
                        "an audio player and a log-mel thumbnail per file (first 5 s; default 30, 0 for none)")
    doctor.add_argument("--fix", metavar="OUT.csv", help="write a cleaned manifest: the later copy of each leaking or "
                                                         "conflicting duplicate dropped (audio untouched)")
    doctor.add_argument("--no-labels", action="store_true", help="skip the label-issue search (confident learning "
                        "on out-of-fold predictions: it prepares the data and fits k small models)")
    doctor.add_argument("--stage", metavar="NAME", help="a recipe in stages: the data of this stage (default: the first)")
    doctor.add_argument("--strict", action="store_true", help="an unreadable audio file is an error instead of a finding")
    doctor.set_defaults(func=cmd_doctor)

    evaluate = command("evaluate", "evaluate a run on its test split or on other data")
    evaluate.add_argument("run_dir", help=run_dir_help)
    evaluate.add_argument("--data", help="folder or CSV to evaluate on (default: the run's test split)")
    evaluate.add_argument("--audio-root", metavar="DIR",
                          help="where the file names of the --data CSV are (default: the CSV's folder)")
    evaluate.add_argument("--split", help="only items of this split (train/val/test)")
    evaluate.add_argument("--strict", action="store_true", help="a bad audio file is an error instead of a skip")
    evaluate.add_argument("--json", help="also write the results to this JSON file")
    evaluate.add_argument("--strong", metavar="LABELS.csv", help="score the run's sound events against strong labels "
                          "(filename,onset,offset,event_label; recordings under --audio-root, default its folder): "
                          "event F1, PSDS1, PSDS2 (psds_eval)")
    evaluate.add_argument("--events-set", action="append", default=[], metavar="events.KEY=VALUE",
                          help="with --strong: change one of the run's events settings (repeatable)")
    evaluate.set_defaults(func=cmd_evaluate)

    ensemble = command("ensemble", "average several runs' probabilities and compare with each")
    ensemble.add_argument("run_dirs", nargs="+", help="two or more run directories trained on the same classes")
    ensemble.add_argument("--data", help="folder or CSV (default: the first run's test split)")
    ensemble.add_argument("--split", help="only items of this split")
    ensemble.add_argument("--weights", type=float, nargs="+", help="one weight per run (default: equal)")
    ensemble.add_argument("--json", help="also write the results to this JSON file")
    ensemble.set_defaults(func=cmd_ensemble)

    augment = command("augment", "write an augmented copy of a dataset, with a manifest of what made each file")
    augment.add_argument("--data", required=True, help="folder or CSV to augment")
    augment.add_argument("--out", required=True, help="folder for the augmented files and their manifest")
    augment.add_argument("--format", default="auto",
                         help="read --data with this importer, as data.format (e.g. tau2022; default: folder or CSV)")
    augment.add_argument("--split", help="only the items of this split (e.g. train)")
    augment.add_argument("--subset", metavar="YAML",
                         help="at most n items per group x label, e.g. '{per: [device, location], n: 50}'")
    augment.add_argument("--transform", action="append", default=[], metavar="YAML",
                         help="a transform, e.g. '{name: impulse_response, ir_dir: irs/, p: 1.0}' (repeatable, in order)")
    augment.add_argument("--transforms-file", help="YAML list of transforms")
    augment.add_argument("--variants", type=int, default=1, help="augmented variants per file")
    augment.add_argument("--sample-rate", type=int, help="resample to this rate first (default: keep each file's)")
    augment.add_argument("--seed", type=int, default=0, help="random seed of the transforms")
    augment.add_argument("--no-original", action="store_true", help="do not list the original files")
    augment.add_argument("--strict", action="store_true", help="a bad audio file is an error instead of a skip")
    augment.add_argument("--overwrite", action="store_true",
                         help="replace an earlier augment output in --out (without it, it is continued)")
    augment.set_defaults(func=cmd_augment)

    synth = command("synth", "generate mixtures: speaker counting (LibriSpeech) or multi-label from single-label")
    synth.add_argument("kind", choices=("speaker-count", "mixtures"), help="what to generate")
    synth.add_argument("--source", required=True, help="LibriSpeech folder (speaker-count), or any folder/CSV")
    synth.add_argument("--out", required=True, help="folder for the mixtures and their labels.csv")
    synth.add_argument("--n", type=int, help="number of mixtures")
    synth.add_argument("--report-sizes", action="store_true", help="speaker-count: 100k/10k/10k train/val/test")
    synth.add_argument("--max-speakers", type=int, default=3, help="speaker-count: most speakers in a mixture")
    # the generator checks the name (its WINDOWS), so the CLI keeps no second list of them
    synth.add_argument("--window", default="random",
                       help="speaker-count: random (as the reference project: each speaker's window "
                            "uniformly random, pauses included) or redraw_quiet (windows quieter than --silence-db "
                            "redrawn)")
    synth.add_argument("--sexes", default="balanced",
                       help="speaker-count: balanced (as the reference project: each count's sex mixes, e.g. FF, "
                            "FM, MM, equally often, as far as the speakers allow) or uniform (speakers drawn "
                            "uniformly, whatever their sex)")
    synth.add_argument("--silence-db", type=float, default=-20.0,
                       help="speaker-count, --window redraw_quiet: a window this many dB below its utterance's RMS "
                            "is a pause")
    synth.add_argument("--max-events", type=int, default=3, help="mixtures: most sound events in a mixture")
    synth.add_argument("--placement", default="tile", help="mixtures: tile (every source fills the mixture) or events "
                       "(each at a random time, silence around it); strong_labels.csv says where each sits")
    synth.add_argument("--seconds", type=float, default=1.0, help="length of each mixture")
    synth.add_argument("--sr", type=int, default=16000, help="sample rate of the mixtures (Hz)")
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    synth.add_argument("--overwrite", action="store_true",
                       help="replace an earlier synth output in --out (without it, it is continued)")
    synth.set_defaults(func=cmd_synth)

    complexity = command("complexity", "parameters, MACs and size of a run or a registered model")
    complexity.add_argument("target", help="run directory or model name (e.g. dcase2022_baseline)")
    complexity.add_argument("--input-shape", type=int, nargs="+",
                            help="input without batch, e.g. 1 40 51 (default: the model's published input)")
    complexity.add_argument("--n-classes", type=int, default=10, help="outputs of a model given by name")
    complexity.add_argument("--no-fold", action="store_true", help="count BatchNorm separately (not folded)")
    complexity.add_argument("--max-params", type=int, help="fail (exit 4) when over, e.g. 128000")
    complexity.add_argument("--max-macs", type=float, help="fail (exit 4) when over, e.g. 30e6")
    complexity.set_defaults(func=cmd_complexity)

    distill_p = command("distill", "knowledge distillation from teacher run(s) into a student")
    distill_p.add_argument("--teacher", action="append", required=True, help="teacher run directory (repeatable)")
    distill_p.add_argument("args", nargs="*", metavar="[STUDENT_CONFIG] [key=value]",
                           help="the student's config or recipe, then overrides")
    distill_p.add_argument("--out", help="the student's run directory (default: runs/<time>-<model>)")
    distill_p.add_argument("--T", type=float, default=2.0, help="temperature of the teachers' soft targets")
    distill_p.add_argument("--alpha", type=float, default=0.5, help="weight of the hard-label loss")
    distill_p.set_defaults(func=cmd_distill)

    quantize = command("quantize", "INT8 post-training quantization (ONNX Runtime), fp32 vs int8")
    quantize.add_argument("run_dir", help=run_dir_help)
    quantize.add_argument("--calibration", type=int, default=200, help="training clips for calibration")
    quantize.add_argument("--method", choices=("auto", "static", "dynamic"), default="auto",
                          help="static (calibrated activations), dynamic (weights only) or auto (static where the "
                               "graph allows)")
    quantize.add_argument("--with-frontend", action="store_true",
                          help="quantize the model that takes raw waveforms (the front-end stays fp32)")
    quantize.add_argument("--max-drop", type=float, default=1.0,
                          help="most points of validation accuracy (or the run's monitored metric) INT8 may lose "
                               "on this machine; over it no INT8 file is written and exit is 4 (default 1)")
    quantize.add_argument("--force", action="store_true", help="write the INT8 file even over --max-drop")
    quantize.add_argument("--keep-float", metavar="auto|LAYER[,LAYER]",
                          help="layers left in float (mixed precision): names from the refusal's layer scan, or "
                               "auto (the most sensitive ones until the drop is within --max-drop)")
    quantize.set_defaults(func=cmd_quantize)

    export = command("export", "export a run to ONNX (optionally with the log-mel front-end)")
    export.add_argument("run_dir", help=run_dir_help)
    export.add_argument("--format", choices=("onnx",), default="onnx", help="file format")
    export.add_argument("--out", help="where to write (default: RUN/model.features.onnx; RUN/model.wave.onnx "
                                         "with --with-frontend or for a model that takes waveforms)")
    export.add_argument("--with-frontend", action="store_true", help="take raw waveform input")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset version (17 or newer)")
    export.add_argument("--overwrite", action="store_true", help="replace an ONNX model audioclf exported to --out")
    export.set_defaults(func=cmd_export)

    predict = command("predict", "predict labels for audio files or folders")
    predict.add_argument("run_dir", help=f"{run_dir_help}, or an exported .onnx file")
    predict.add_argument("paths", nargs="+", help="audio files and/or folders, or '-': audio from stdin (a WAV "
                         "stream, or raw PCM with --format), one line per window as it comes")
    predict.add_argument("--top-k", type=int, default=3, help="labels printed per file, most probable first")
    predict.add_argument("--aggregate", choices=("mean", "max"), default="mean",
                         help="how windows of a long recording are combined")
    predict.add_argument("--csv", help="write all probabilities to this CSV")
    predict.add_argument("--strict", action="store_true",
                         help="a file that cannot be read is an error (exit 2) instead of a skip (exit 3)")
    predict.add_argument("--submission", metavar="SAMPLE_CSV",
                         help="write --csv in this sample submission's columns and row order (FSD2019)")
    predict.add_argument("--timeline", metavar="OUT", help="one long recording: every window's probabilities "
                         "against time, as a CSV (OUT.csv) or a heat map (OUT.png)")
    predict.add_argument("--events", metavar="OUT.csv", help="each recording's sound events (onset, offset, class, "
                         "peak probability; DCASE columns), with the run's events.* settings (stdin: written when "
                         "the stream ends)")
    predict.add_argument("--events-set", action="append", default=[], metavar="events.KEY=VALUE",
                         help="change one of the run's events settings (repeatable; audioclf config --list events)")
    predict.add_argument("--ensemble", action="append", metavar="RUN", help="average the probabilities with this "
                         "run's (or .onnx file's), each with its own preprocessing (repeatable)")
    predict.add_argument("--tta", type=int, default=1, metavar="N",
                         help="test-time augmentation: average each window over N time-shifted copies "
                              "(N times the compute; default 1 = off)")
    predict.add_argument("--min-confidence", type=float, metavar="P",
                         help="single-label: below this top probability (after the run's calibration) the file gets "
                              "no label (an abstention, '-' in --csv); the count is printed")
    stream = predict.add_argument_group("audio from stdin (predict RUN -)")
    stream.add_argument("--format", metavar="FORMAT", help="wav, or raw PCM: s16le, s24le, s32le or f32le "
                        "(default: a stream opening with RIFF is WAV; raw samples need their format named)")
    stream.add_argument("--rate", type=int, metavar="HZ", help="raw PCM: the sample rate (required)")
    stream.add_argument("--channels", type=int, metavar="N", help="raw PCM: interleaved channels (default 1)")
    stream.add_argument("--hop", type=float, metavar="SECONDS", help="a window every SECONDS (default: half a clip; "
                        "shorter answers sooner at more compute)")
    stream.add_argument("--json", action="store_true", help="JSON lines (start, end, labels, every probability) "
                        "instead of tab-separated columns")
    predict.set_defaults(func=cmd_predict)

    sweep = command("sweep", "many runs that differ in a few keys (grid, random or TPE search, on Optuna)",
                    epilog=_SWEEP_EPILOG)
    sweep.add_argument("args", nargs="*", metavar="[SWEEP] [key=value]",
                       help="a sweep YAML or bundled protocol (--list), then overrides of the base config")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="a grid axis, e.g. train.batch_size=16,32,64 (repeatable)")
    sweep.add_argument("--sampler", choices=("grid", "random", "tpe"), help="how trials are chosen (default: the "
                       "sweep file's, else grid)")
    sweep.add_argument("--trials", type=int, help="number of trials (random and tpe)")
    sweep.add_argument("--metric", help="the validation metric a trial is judged by (default: the run's monitor)")
    sweep.add_argument("--prune", action="store_true", help="stop trials whose validation curve falls behind")
    sweep.add_argument("--teacher", action="append", metavar="RUN", help="distillation trials from this teacher run "
                       "(repeatable; sweeps over distill.T / distill.alpha)")
    sweep.add_argument("--out", help="the sweep folder (trials/, sweep.db, sweep.json, comparison.md)")
    sweep.add_argument("--jobs", type=int, default=1, help="worker processes on this machine")
    sweep.add_argument("--storage", help="Optuna storage URL shared by several machines (default: OUT/sweep.db)")
    sweep.add_argument("--resume", action="store_true", help="continue the sweep in --out: finished trials are kept")
    sweep.add_argument("--join", action="store_true", help="work on the sweep in --storage started elsewhere")
    sweep.add_argument("--overwrite", action="store_true", help="replace the earlier sweep in --out")
    sweep.add_argument("--list", action="store_true", help="list the bundled protocols (the reference solutions' experiments)")
    sweep.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    sweep.set_defaults(func=cmd_sweep)

    compare_p = command("compare", "put runs and sweeps side by side: table, learning curves, effect of each key")
    compare_p.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP", help="run directories and sweep folders")
    compare_p.add_argument("--metrics", help="comma-separated metrics, the first ranks the runs (default: the "
                           "monitor, then log_loss)")
    compare_p.add_argument("--out", help="where to write comparison.md/.csv and the plots (default: the sweep "
                           "folder when one sweep is given, else ./comparison)")
    compare_p.set_defaults(func=cmd_compare)

    serve_p = command("serve", "answer over HTTP (POST /predict, /timeline; GET /model, /health; WebSocket /live) "
                              "with a web page at /")
    serve_p.add_argument("source", metavar="RUN_OR_ONNX", help=f"{run_dir_help}, or an exported .onnx file")
    serve_p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    serve_p.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve_p.add_argument("--max-mb", type=float, default=50.0, help="largest upload accepted, in MB")
    serve_p.add_argument("--max-seconds", type=float, default=600.0, help="longest recording accepted, in seconds")
    serve_p.add_argument("--timeout", type=float, default=60.0, help="seconds a request may take")
    serve_p.add_argument("--read-timeout", type=float, default=30.0,
                         help="seconds an upload may take to arrive (408 after)")
    serve_p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                         help="a Host name to serve besides localhost and IP addresses (repeatable)")
    serve_p.add_argument("--live-sessions", type=int, default=4,
                         help="live microphone streams (WebSocket /live) open at once")
    serve_p.add_argument("--live-seconds", type=float, default=3600.0,
                         help="seconds of audio one live stream may send")
    serve_p.add_argument("--docs", action="store_true", help="serve the API docs at /docs and /openapi.json")
    serve_p.set_defaults(func=cmd_serve)

    config = command("config", "list the config keys with their types, defaults and meaning")
    config.add_argument("--list", metavar="SECTION", nargs="?", const="", default=None, dest="section",
                        help="every key (or those of one section: data, features, model, augment, limits, train)")
    config.set_defaults(func=cmd_config)
    return parser


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-command's own parser: its usage, not the top level's, goes with an error about its options."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[command]


def _config_key_hint(option: str, argv: list[str]) -> str:
    """``"; did you mean train.epochs=5?"`` for ``--epochs 5`` (or ``--epochs=5``): an option named like a config
    key, meant as a ``key=value`` override; empty when no key has that name."""
    if not option.startswith("--"):
        return ""
    name, _, value = option[2:].partition("=")
    if not value:  # `--epochs 5`: argparse took the 5 as a positional; it follows the option in argv
        after = argv[argv.index(option) + 1:argv.index(option) + 2] if option in argv else []
        value = after[0] if after and not after[0].startswith("-") and "=" not in after[0] else "VALUE"
    from .config import describe_keys

    keys = [key for key, *_ in describe_keys() if key.rsplit(".", 1)[-1] == name.replace("-", "_")]
    return f"; did you mean {' or '.join(f'{key}={value}' for key in keys)}?" if keys else ""


def _idle_threads_sleep() -> None:
    """Idle OpenMP threads wait asleep instead of spinning, unless the user chose otherwise.

    Set before torch is first imported (libgomp reads it once). On a shared machine a spinning thread burns
    a core another process needs and waits for one that is descheduled: at load 9 on 2 cores a demo training
    step took 2.8x longer with 2 spinning threads than with 1 thread, and `audioclf demo` used 211 CPU-seconds
    instead of 102; on an idle machine sleeping costs little (benchmarks/threads.py measures both).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    _idle_threads_sleep()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops collecting `key=value` overrides at the first option (`train demo --out X a.b=1`):
    # overrides given after options are still overrides.
    target = "args" if hasattr(args, "args") else "overrides" if hasattr(args, "overrides") else None
    if extra and target and all("=" in e and not e.startswith("-") for e in extra):
        setattr(args, target, [*getattr(args, target), *extra])
    elif extra:
        hint = _config_key_hint(extra[0], argv if argv is not None else sys.argv[1:]) if target else ""
        _command_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, handlers=[handler])
    try:
        code = args.func(args)
    except AudioclfError as exc:
        if args.verbose:
            raise
        err.print(Text.assemble(("error:", "red"), f" {exc}"), highlight=False)
        return EXIT_OVER_BUDGET if isinstance(exc, BudgetExceeded) else EXIT_ERROR
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # a failure no check foresaw: still one line, the traceback behind -v
        if args.verbose:
            raise
        text = " ".join(str(exc).split())[:300] or "no message"
        err.print(Text.assemble(("error:", "red"), f" unexpected {type(exc).__name__}: {text} (run with -v for the traceback)"),
                  highlight=False)
        return EXIT_UNEXPECTED
    return code or EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
