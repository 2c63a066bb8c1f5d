"""`python -m ablate.report` on a real small study, rendered in a real headless Chromium (no network)."""

import base64
import html
import json
import re
import shutil
import statistics
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
from helpers import STORAGE, write_sweep
from optuna.trial import TrialState

from ablate.report import main

ARTIFACTS = Path(tempfile.gettempdir()) / "ablate-test-artifacts"
PLOTS = ("forest", "seeds", "history", "importances", "parallel", "cost", "iou")


@pytest.fixture(scope="module")
def study(shared_study):
    """The session's finished study (tests/conftest.py: 3 variants x 2 seeds of a fusion x lr grid, a 4th variant
    failed) and its report against the worst variant (so best and baseline differ); the study's folder."""
    worst = min(shared_study.complete.values(), key=lambda t: t.value)
    baseline = ",".join(f"{k}={v}" for k, v in worst.params.items())
    runs = shared_study.folder / "runs"
    assert main(["--study", "t", "--storage", shared_study.url, "--runs", str(runs), "--baseline", baseline]) == 0
    return shared_study.folder


def complete(folder: Path) -> list[optuna.trial.FrozenTrial]:
    """The study's complete trials (not the failed variant's)."""
    trials = optuna.load_study(study_name="t", storage=f"sqlite:///{folder}/runs/test.db").trials
    return [t for t in trials if t.state == TrialState.COMPLETE]


def chromium(url: str, *args: str, profile: Path) -> tuple[str, list[str]]:
    """(stdout, console messages) of headless Chromium on `url`, with every host name unresolvable."""
    exe = shutil.which("chromium")
    assert exe, "chromium not found: apt-get install -y chromium (Debian's package; .ci/run installs it)"
    done = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


class PlotSvgs(HTMLParser):
    """Counts plotly's rendered `svg.main-svg` inside each `div.plotly-graph-div`, by the div's id."""

    def __init__(self):
        super().__init__()
        self.stack, self.counts = [], {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div":
            plot = "plotly-graph-div" in (a.get("class") or "").split()
            self.stack.append(a["id"] if plot else (self.stack[-1] if self.stack else None))
            if plot:
                self.counts.setdefault(a["id"], 0)
        elif tag == "svg" and "main-svg" in (a.get("class") or "").split() and self.stack and self.stack[-1]:
            self.counts[self.stack[-1]] += 1

    def handle_endtag(self, tag):
        if tag == "div":
            self.stack.pop()


def rendered_plots(dom: str) -> dict[str, int]:
    parser = PlotSvgs()
    parser.feed(dom)
    return parser.counts


def test_report_renders_offline_in_chromium_with_every_plot_and_no_console_message(study, tmp_path, capsys):
    report = study / "runs/t/report.html"
    text = report.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"?(https?:)?//", text)  # nothing fetched
    assert text.count("* plotly.js v") == 1  # plotly.js inline, once
    dom, console = chromium(report.as_uri(), "--dump-dom", profile=tmp_path / "profile")
    assert console == []  # plotly logs nothing when it renders; any message (an uncaught error) fails here
    counts = rendered_plots(dom)
    assert set(counts) == {f"plot-{p}" for p in PLOTS} and all(n >= 1 for n in counts.values()), counts
    boxes = rendered_boxes(report, tmp_path)  # every point label readable: none overlap or leave its plot
    assert {plot: label_problems(b) for plot, b in boxes.items()} == {f"plot-{p}": [] for p in PLOTS}
    assert sorted(t for t, _ in boxes["plot-cost"]["labels"]) == ["1", "1", "2", "2", "3", "3"]  # 3 variants
    shot = tmp_path / "report.png"
    chromium(
        report.as_uri(),
        f"--screenshot={shot}",
        "--window-size=1400,4400",
        "--hide-scrollbars",
        profile=tmp_path / "profile",
    )
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1400, 4400) and len(image.convert("RGB").getcolors(1 << 24)) > 100  # not blank
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report.png")
    with capsys.disabled():
        print(f"\nreport screenshot: {ARTIFACTS / 'report.png'}")


BOXES_JS = """() => {
  const box = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
  const all = (div, css) => [...div.querySelectorAll(css)];
  const out = {};
  for (const div of all(document, ".plotly-graph-div")) {
    const keys = all(div, "g.annotation text.annotation-text").filter(t => /^[0-9]+$/.test(t.textContent));
    out[div.id] = {
      svg: box(div.querySelector("svg.main-svg")),
      plots: all(div, ".bglayer rect.bg").map(box),
      points: all(div, "path.point").map(box),
      bars: all(div, "g.errorbar path").map(box),
      labels: [...keys, ...all(div, "g.textpoint text")].map(e => [e.textContent, box(e)]),
      legend: all(div, "g.legend text.legendtext").map(e => [e.textContent, box(e)]),
    };
  }
  return out;
}"""


def probe(page: Path, script: str, tmp_path: Path, width: int = 1400) -> object:
    """What `script` (a JS function of no argument returning JSON-able data) returns in Chromium once `page` has
    rendered, in a window `width` pixels wide."""
    probed = tmp_path / f"probe-{page.name}"
    runner = f"<script>setTimeout(() => document.body.setAttribute('data-probe', JSON.stringify(({script})())), 3000)"
    probed.write_text(page.read_text().replace("</body>", runner + "</script></body>"))
    window = f"--window-size={width},3000"
    dom, console = chromium(probed.as_uri(), "--dump-dom", window, profile=tmp_path / "profile")
    assert console == []
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, "the probe script did not run"
    return json.loads(html.unescape(found.group(1)))


def rendered_boxes(page: Path, tmp_path: Path) -> dict:
    """Where Chromium drew each plot's point labels, points, error bars, plot areas and legend: {div id: {svg,
    plots, points, bars, labels: [(text, box)], legend: [(text, box)]}}, boxes as [left, top, right, bottom] in
    pixels."""
    return probe(page, BOXES_JS, tmp_path)


def label_problems(plot: dict) -> list[str]:
    """What a reader could not read on a plot: point labels that overlap one another, that lie outside every plot
    area (off an edge), cover a point's centre or sit on an error bar, and legend entries outside the figure."""
    inside = lambda a, b: b[0] <= a[0] and b[1] <= a[1] and a[2] <= b[2] and a[3] <= b[3]  # noqa: E731
    meet = lambda a, b: a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]  # noqa: E731
    labels, problems = plot["labels"], []
    for i, (text, box) in enumerate(labels):
        problems += [f"{text!r} overlaps {other!r}" for other, b in labels[i + 1 :] if meet(box, b)]
        if not any(inside(box, area) for area in plot["plots"]):
            problems.append(f"{text!r} is outside the plot areas: {box}")
        centres = [((p[0] + p[2]) / 2, (p[1] + p[3]) / 2) for p in plot["points"]]
        if any(box[0] < x < box[2] and box[1] < y < box[3] for x, y in centres):
            problems.append(f"{text!r} covers a point")
        problems += [f"{text!r} sits on an error bar" for bar in plot.get("bars", []) if meet(box, bar)]
    problems += [f"legend {t!r} is outside the figure: {b}" for t, b in plot["legend"] if not inside(b, plot["svg"])]
    return problems


DEFAULT_STUDY = [0.6881, 0.6627, 0.5143, 0.3768, 0.3891, 0.3500, 0.3896, 0.3702]  # README: the default sweep


def default_study_rows() -> list[dict]:
    """The default sweep's 8 variants (image pooling x norm x rates) as their table rows: rates change neither
    parameters nor FLOPs, so points pair up at one x; neck parameters as ablate counts them for the base config."""
    from ablate.necks import create_neck

    rows = []
    grid = [(p, n, r) for p in (True, False) for n in ("bn", "none") for r in ((2, 4, 6), (1, 2, 3))]
    for (pool, norm, rates), mean in zip(grid, DEFAULT_STUDY):
        neck = create_neck("aspp", 128, out_channels=64, rates=list(rates), norm=norm, image_pooling=pool)
        rates = ",".join(map(str, rates))
        variant = f"model.neck.image_pooling={str(pool).lower()} model.neck.norm={norm} model.neck.rates={rates}"
        params, gflops = sum(p.numel() for p in neck.parameters()), 0.79 - 0.01 * (not pool)
        rows.append({"variant": variant, "mean": mean, "std": 0.02 + 0.1 * (mean < 0.4)})
        rows[-1].update({"params/neck": params, "gflops": gflops})
    return sorted(rows, key=lambda r: -r["mean"])


def test_cost_plot_keys_of_the_default_study_neither_overlap_nor_leave_the_plot(tmp_path):
    import plotly.graph_objects as go

    from ablate.results.cost_plot import cost_figure
    from ablate.study.variants import short_labels

    rows = default_study_rows()
    labels = short_labels(rows)
    page = tmp_path / "cost.html"
    fig = cost_figure(rows, labels)
    assert fig.layout.xaxis.range[0] == fig.layout.xaxis2.range[0] == 0  # GFLOPs 0.78 vs 0.79 look 1 % apart
    page.write_text(fig.to_html(include_plotlyjs=True, div_id="plot-cost"))
    plot = rendered_boxes(page, tmp_path)["plot-cost"]
    assert label_problems(plot) == [] and len(plot["bars"]) == 16  # clear of every point's error bar
    assert sorted(t for t, _ in plot["labels"]) == sorted(str(i) for i in range(1, 9) for _ in "xy")  # both plots
    assert [t for t, _ in plot["legend"]] == [f"{i + 1}  {labels[r['variant']]}" for i, r in enumerate(rows)]
    old = go.Figure(  # the plot as it was: every point printed its full label above itself
        go.Scatter(
            x=[r["params/neck"] for r in rows],
            y=[r["mean"] for r in rows],
            mode="markers+text",
            text=[labels[r["variant"]] for r in rows],
            textposition="top center",
            cliponaxis=False,
            error_y={"type": "data", "array": [r["std"] for r in rows]},
        )
    )
    page.write_text(old.to_html(include_plotlyjs=True, div_id="plot-old"))
    problems = label_problems(rendered_boxes(page, tmp_path)["plot-old"])
    assert any("overlaps" in p for p in problems) and any("outside the plot areas" in p for p in problems), problems
    assert any("sits on an error bar" in p for p in problems), problems


def test_console_check_catches_a_script_error_and_a_plot_that_did_not_render(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<div id="p" class="plotly-graph-div"></div><script>Plotly.newPlot("p", [])</script>')
    dom, console = chromium(page.as_uri(), "--dump-dom", profile=tmp_path / "profile")
    assert len(console) == 1 and "Uncaught ReferenceError: Plotly is not defined" in console[0]
    assert rendered_plots(dom) == {"p": 0}


def figure_data(text: str, div_id: str) -> list[dict]:
    """The traces the report hands to Plotly.newPlot for one plot div."""
    call = re.search(rf'Plotly\.newPlot\(\s*"{div_id}",\s*', text)
    return json.JSONDecoder().raw_decode(text, call.end())[0]


def test_table_cost_plot_and_heat_map_hold_the_studys_numbers(study):
    text = (study / "runs/t/report.html").read_text()
    trials = complete(study)
    (iou,), cost = figure_data(text, "plot-iou"), figure_data(text, "plot-cost")
    logged = set()
    for t in trials:
        values = t.user_attrs["values"]
        mean, std = statistics.fmean(values), statistics.stdev(values)
        runs = [
            json.loads((study / f"runs/t/t{t.number}-s{s}/summary.json").read_text()) for s in t.user_attrs["seeds"]
        ]
        latency = min(r["latency_ms"] for r in runs)  # the least of the seeds' measurements
        assert f"<td>{mean:.4f} ± {std:.4f}</td>" in text and f"<td>{latency:.1f}</td>" in text
        label = t.user_attrs["variant"]  # the keys share no section: shown whole
        traces = [trace for trace in cost if trace["name"].split("  ", 1)[1] == label]  # "<key>  <label>"
        for trace, x in zip(traces, ("params/neck", "gflops"), strict=True):
            assert trace["x"] == [t.user_attrs[x]] and trace["y"] == [pytest.approx(mean)]
            assert trace["error_y"]["array"] == [pytest.approx(std)] and label in trace["hovertemplate"]
        logged.update(k.removeprefix("val/IoU_best/") for r in runs for k in r if k.startswith("val/IoU_best/"))
        row = iou["z"][iou["y"].index(label)]
        for c, shown in zip(iou["x"], row):  # IoU at each seed's best epoch, mean over the seeds that have it
            have = [r[f"val/IoU_best/{c}"] for r in runs if f"val/IoU_best/{c}" in r]
            assert shown == (pytest.approx(statistics.fmean(have)) if have else None)
    assert len(iou["y"]) == len(trials) == 3 and sorted(iou["x"]) == sorted(logged)  # every class any run has


def test_main_effects_and_the_verdict_plots_hold_the_studys_numbers(study):
    from ablate.results.formats import effects_cells
    from ablate.stats.factorial import factorial_effects
    from ablate.study.variants import add_deltas, rows_of

    text = (study / "runs/t/report.html").read_text()
    s = optuna.load_study(study_name="t", storage=f"sqlite:///{study}/runs/test.db")
    rows = rows_of(s)
    worst = [r for r in rows if r["mean"] is not None][-1]  # the report's baseline (the fixture)
    add_deltas(rows, dict(v.split("=") for v in worst["variant"].split(" ")))
    for term in factorial_effects(rows):  # 3 of the 4 grid points ran: main effects only
        assert "".join(f"<td>{html.escape(c)}</td>" for c in effects_cells(term)) in text
    forest = {name: trace for trace in figure_data(text, "plot-forest") for name in [trace["name"]]}
    shown = [r for r in rows if not r["baseline"] and r["ci_low"] is not None]  # not the failed variant
    points = sorted(
        v for t in forest.values() for xs in zip(t["x"], t["error_x"]["array"], t["error_x"]["arrayminus"]) for v in xs
    )
    assert points == pytest.approx(
        sorted(v for r in shown for v in (r["delta"], r["ci_high"] - r["delta"], r["delta"] - r["ci_low"]))
    )
    seeds = figure_data(text, "plot-seeds")
    assert sorted(x for trace in seeds[::2] for x in trace["x"]) == pytest.approx(
        sorted(v for r in rows for v in r["seeds"].values())
    )  # every seed's value, one marker each


def test_importances_that_optuna_cannot_tell_apart_are_a_note_not_a_plot():
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    from ablate.results.search_plots import importances_figure

    study = optuna.create_study(direction="maximize")  # the default sweep's 2x2x2 grid, one seed, as measured
    values = [0.6881, 0.6627, 0.5143, 0.3768, 0.3891, 0.3500, 0.3896, 0.3702]  # README, the fresh-clone run
    grid = [(p, n, r) for p in ("true", "false") for n in ("bn", "none") for r in ("2,4,6", "1,2,3")]
    dists = {
        k: CategoricalDistribution(c)
        for k, c in (("pool", ("true", "false")), ("norm", ("bn", "none")), ("rates", ("2,4,6", "1,2,3")))
    }
    for (p, n, r), v in zip(grid, values):
        study.add_trial(create_trial(params={"pool": p, "norm": n, "rates": r}, distributions=dists, value=v))
    shares = optuna.importance.get_param_importances(study)
    assert len(set(shares.values())) == 1  # Optuna's own numbers: 1/3 each
    shown = importances_figure(study)
    assert isinstance(shown, str) and "same share (1/3) on 8 trials" in shown


def test_best_and_baseline_predictions_are_the_run_folders_images(study):
    text = (study / "runs/t/report.html").read_text()
    trials = complete(study)
    for t in (max(trials, key=lambda t: t.value), min(trials, key=lambda t: t.value)):  # best, baseline
        png = (study / f"runs/t/t{t.number}-s0/predictions.png").read_bytes()  # the lowest seed
        assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in text


def test_receptive_fields_are_the_analysis_numbers(study):
    from ablate.analyze import encoder_rf
    from ablate.config import from_dict
    from ablate.results.report_tables import RF_KEYS, rf_order
    from ablate.run.analysis import neck_summary

    text = (study / "runs/t/report.html").read_text()
    for t in complete(study):
        runs = [
            json.loads((study / f"runs/t/t{t.number}-s{s}/summary.json").read_text()) for s in t.user_attrs["seeds"]
        ]
        keys = sorted(k for k in runs[0] if k.startswith(RF_KEYS))
        numbers = {k: statistics.fmean(r[k] for r in runs) for k in keys}
        model, rf, stride, size = encoder_rf(from_dict(t.user_attrs["config"]))  # what the config's model has
        assert {k: numbers[k] for k in numbers if not k.startswith("erf/")} == neck_summary(
            model.neck, rf, stride, size
        )
        erf = base64.b64encode((study / f"runs/t/t{t.number}-s0/erf.png").read_bytes()).decode()
        assert "".join(f"<td>{numbers[k]:.4g}</td>" for k in sorted(numbers, key=rf_order)) in text
        assert f'<img class="erf" alt="ERF" src="data:image/png;base64,{erf}">' in text


def test_a_study_too_small_to_plot_gets_notes_and_still_renders(tmp_path):
    from ablate.sweep import main as sweep

    assert sweep([write_sweep(n_trials=1, seeds=(0,)), "--storage", STORAGE]) == 0
    shutil.rmtree("runs/t/t0-s0")  # a variant whose run folder is gone
    assert main(["--study", "t", "--storage", STORAGE, "--out", "small.html"]) == 0
    text = Path("small.html").read_text()
    assert "Optuna cannot rank the settings of this study: 0 swept setting(s) varied, 2 needed" in text
    assert "no complete trial with a varied setting to draw" in text
    assert "no run folder of this study has per-class IoU" in text and "no run folder has predictions.png" in text
    dom, console = chromium(Path("small.html").resolve().as_uri(), "--dump-dom", profile=tmp_path / "profile")
    assert "no row has an interval yet: a comparison needs 2 seeds on each side" in text  # the forest plot's place
    assert console == [] and set(rendered_plots(dom)) == {"plot-seeds", "plot-history", "plot-cost"}
    assert all(n >= 1 for n in rendered_plots(dom).values())


def test_bad_input_is_a_clear_error_before_anything_is_written(study, capsys):
    url = f"sqlite:///{study}/runs/test.db"
    assert main(["--study", "nope", "--storage", url, "--runs", str(study / "runs")]) == 2
    assert f"no study 'nope' in {url}; studies there: t" in capsys.readouterr().err
    assert main(["--study", "t", "--storage", url, "--runs", "missing"]) == 2
    assert "--runs 'missing' is not a folder" in capsys.readouterr().err
    assert (
        main(["--study", "t", "--storage", url, "--runs", str(study / "runs"), "--baseline", "model.neck.fusion=mean"])
        == 2
    )
    assert "matches 0 rows" in capsys.readouterr().err
    assert not Path("runs").exists()


def test_a_class_that_one_run_lacks_is_averaged_over_the_runs_that_have_it():
    from ablate.results.html_report import class_ious, iou_heatmap

    runs = [
        {"summary": {"val/IoU_best/background": 0.9, "val/IoU_best/diamond/blue": 0.5}},
        {"summary": {"val/IoU_best/background": 0.7}},
    ]  # diamond/blue in neither its predictions nor targets
    assert class_ious(runs) == ({"background": pytest.approx(0.8), "diamond/blue": 0.5}, "best epoch")
    older = [{"summary": {"val/IoU/a": 0.2, "val/IoU/b": 0.4}}, {"summary": {"val/IoU/b": 0.6}}]  # last epoch only
    assert class_ious(older) == ({"a": 0.2, "b": pytest.approx(0.5)}, "last epoch")
    assert class_ious([{"summary": {}}]) == ({}, "")
    other = [{"summary": {"val/IoU_best/background": 0.6, "val/IoU_best/square/red": 0.3}}]
    (heat,) = iou_heatmap(
        [{"variant": "v=1"}, {"variant": "v=2"}], {"v=1": runs, "v=2": other}, {"v=1": "1", "v=2": "2"}
    ).data
    assert list(heat.x) == ["background", "diamond/blue", "square/red"]  # every class of any variant
    assert [list(z) for z in heat.z] == [[pytest.approx(0.8), 0.5, None], [0.6, None, 0.3]]  # missing: a gap
    assert [list(t) for t in heat.text] == [["0.80", "0.50", ""], ["0.60", "", "0.30"]]


def test_the_report_renders_when_the_runs_of_a_variant_differ_in_their_classes(study, tmp_path):
    shutil.copytree(study / "runs", tmp_path / "runs", ignore=shutil.ignore_patterns("wandb", "report.html"))
    t = complete(study)[0]
    first = tmp_path / f"runs/t/t{t.number}-s{t.user_attrs['seeds'][0]}/summary.json"
    summary = json.loads(first.read_text())
    gone = next(k for k in summary if k.startswith("val/IoU_best/"))
    first.write_text(json.dumps({k: v for k, v in summary.items() if k != gone}))  # one run lacks a class
    assert main(["--study", "t", "--storage", "sqlite:///runs/test.db", "--out", "r.html"]) == 0
    (iou,) = figure_data(Path("r.html").read_text(), "plot-iou")
    others = [
        json.loads((tmp_path / f"runs/t/t{t.number}-s{s}/summary.json").read_text()) for s in t.user_attrs["seeds"][1:]
    ]
    have = [r[gone] for r in others if gone in r]
    shown = iou["z"][iou["y"].index(t.user_attrs["variant"])][iou["x"].index(gone.removeprefix("val/IoU_best/"))]
    assert shown == (pytest.approx(statistics.fmean(have)) if have else None)


TABLES_JS = """() => [...document.querySelectorAll("table")].map(t => {
  const box = t.parentElement, style = getComputedStyle(box);
  return {
    box: box.className, overflowX: style.overflowX, scrollWidth: box.scrollWidth, clientWidth: box.clientWidth,
    right: box.getBoundingClientRect().right, page: document.documentElement.clientWidth,
    headers: [...t.querySelectorAll("th")].map(th => [th.textContent, th.getAttribute("title")]),
  };
})"""


def clipped_tables(tables: list[dict]) -> list[str]:
    """The tables a reader cannot see whole: wider than their box with no sideways scrolling, or a box past the
    page's right edge."""
    problems = [
        f"a table in <div class={t['box']!r}> is {t['scrollWidth']} px wide in {t['clientWidth']} px, overflow-x "
        f"{t['overflowX']}"
        for t in tables
        if t["scrollWidth"] > t["clientWidth"] and t["overflowX"] not in ("auto", "scroll")
    ]
    return problems + [
        f"a table's box ends at {t['right']} px, past {t['page']}" for t in tables if t["right"] > t["page"]
    ]


def test_every_table_scrolls_in_its_own_box_with_its_headers_in_words(study, tmp_path):
    report = study / "runs/t/report.html"
    tables = probe(report, TABLES_JS, tmp_path, width=900)  # narrow: the comparison table is wider than that
    assert len(tables) == 3 and clipped_tables(tables) == []  # comparison, main effects, receptive fields
    assert any(t["scrollWidth"] > t["clientWidth"] for t in tables)  # the check above had a table to scroll
    headers = dict(h for t in tables for h in t["headers"])  # {words: exact key}
    assert all(key for key in headers.values()), headers  # every header has its key as a tooltip
    assert {
        "holes in the 3×3 grid": "gridding_holes",
        "parameters of the neck": "params/neck",
    }.items() <= headers.items()
    assert headers["radius holding 50 % of the effective receptive field (px)"] == "erf/r50_px"
    assert headers["fusion"] == "model.neck.fusion" and headers["seeds"] == "n"
    assert not [w for w, key in headers.items() if w == key and re.search(r"[/_]", key)]  # no raw key as a header
    bare = tmp_path / "bare.html"  # the report as it was: tables straight in the page
    bare.write_text(report.read_text().replace('<div class="scroll">', "<div>"))
    assert clipped_tables(probe(bare, TABLES_JS, tmp_path, width=900))


def test_receptive_field_columns_are_the_numbers_some_variant_has_in_branch_order():
    from ablate.results.report_tables import receptive_field_section, rf_order

    keys = ["erf/r50_px", "gridding_holes", "taps9/rate6", "rf/rate6", "rf/image_pool", "rf/rate12", "rf/1x1"]
    assert sorted(keys + ["feature_px", "rf/encoder"], key=rf_order) == [
        *("rf/encoder", "feature_px", "rf/1x1", "rf/rate6", "taps9/rate6", "rf/rate12", "rf/image_pool"),
        *("gridding_holes", "erf/r50_px"),
    ]
    runs = {
        "a=1": [{"summary": {"rf/rate6": 131.0, "rf/rate2": float("nan")}, "folder": Path("nowhere")}],
        "a=2": [{"summary": {"rf/rate2": 99.0, "erf/r50_px": None}, "folder": Path("nowhere")}],
    }
    section = receptive_field_section([{"variant": "a=1"}, {"variant": "a=2"}], runs, {"a=1": "1", "a=2": "2"})
    assert re.findall(r'<th title="([^"]+)"', section) == ["variant", "rf/rate2", "rf/rate6"]  # no empty column
    assert "<td>1</td><td>–</td><td>131</td>" in section and "<td>2</td><td>99</td><td>–</td>" in section


def test_the_search_history_is_of_variants_means_over_their_seeds_not_single_trials():
    from optuna.trial import create_trial

    from ablate.results.search_plots import history_figure, mean_history
    from ablate.study.variants import rows_of

    study = optuna.create_study(direction="maximize")
    for variant, seeds, values in (("a=1", [0, 1], [0.5, 0.6]), ("a=2", [0], [0.9]), ("a=2", [1, 2], [0.3, 0.6])):
        attrs = {"variant": variant, "seeds": seeds, "values": values}
        study.add_trial(create_trial(value=statistics.fmean(values), user_attrs=attrs))
    assert study.best_value == 0.9  # Optuna's "best value": the trial of one seed
    history = mean_history(study)
    assert [h["mean"] for h in history] == pytest.approx([0.55, 0.9, 0.6])  # a=2 over 1, then 3 seeds
    assert [h["best"] for h in history] == pytest.approx([0.55, 0.9, 0.6])
    assert history[-1]["best"] == pytest.approx(rows_of(study)[0]["mean"])  # the table's best row
    markers, best = history_figure(study, {"a=1": "1", "a=2": "2"}).data
    assert list(best.y) == [h["best"] for h in history] and list(markers.x) == [0, 1, 2]


def test_the_reports_history_ends_at_the_best_variants_mean_not_at_one_added_seed(study, tmp_path):
    from optuna.trial import create_trial

    from ablate.study.variants import rows_of

    shutil.copytree(study / "runs", tmp_path / "runs", ignore=shutil.ignore_patterns("wandb", "report.html"))
    s = optuna.load_study(study_name="t", storage="sqlite:///runs/test.db")
    worst = min(complete(tmp_path), key=lambda t: t.value)
    attrs = {**worst.user_attrs, "seeds": [7], "values": [0.999]}  # one added seed, above every variant's mean
    s.add_trial(create_trial(params=worst.params, distributions=worst.distributions, value=0.999, user_attrs=attrs))
    assert main(["--study", "t", "--storage", "sqlite:///runs/test.db", "--out", "r.html"]) == 0
    means = sorted(r["mean"] for r in rows_of(s) if r["mean"] is not None)
    markers, best = figure_data(Path("r.html").read_text(), "plot-history")
    assert s.best_value == 0.999 and max(best["y"] + markers["y"]) < 0.999  # Optuna's "best value" is not shown
    assert best["y"][-1] == pytest.approx(means[-1])  # the table's best row
    assert markers["y"][-1] == pytest.approx(statistics.fmean([*worst.user_attrs["values"], 0.999]))  # 3 seeds


PANELS_JS = """() => ({
  panels: [...document.querySelectorAll("figure.panel")].map(f => ({
    caption: f.querySelector("figcaption").textContent,
    columns: [...f.querySelectorAll("div.columns span")].map(s => (b => [s.textContent, (b.left + b.right) / 2])(
      s.getBoundingClientRect())),
    image: (b => [b.left, b.top, b.right])(f.querySelector("img").getBoundingClientRect()),
  })),
  importances: [...document.querySelectorAll("[id*=importances]")].map(div => ({
    why: div.closest(".importances")?.querySelector("p.why")?.textContent ?? null,
    effects: div.closest(".beside")?.querySelectorAll(".effects table").length ?? 0,
  })),
})"""


def test_predictions_show_the_best_beside_the_baseline_under_column_names(study, tmp_path):
    from ablate.study.variants import short_labels

    s = optuna.load_study(study_name="t", storage=f"sqlite:///{study}/runs/test.db")
    done = complete(study)
    labels = short_labels([{"variant": t.user_attrs["variant"]} for t in s.trials])
    best, worst = max(done, key=lambda t: t.value), min(done, key=lambda t: t.value)  # the fixture's baseline: worst
    panels = probe(study / "runs/t/report.html", PANELS_JS, tmp_path)["panels"]
    assert [p["caption"].split(" (")[0] for p in panels] == [
        f"best: {labels[best.user_attrs['variant']]}",
        f"baseline: {labels[worst.user_attrs['variant']]}",
    ]
    for p in panels:  # each column's name centred over its third of the picture (image | truth | prediction)
        assert [c for c, _ in p["columns"]] == ["image", "ground truth", "prediction"]
        left, _, right = p["image"]
        assert [int(3 * (x - left) / (right - left)) for _, x in p["columns"]] == [0, 1, 2], p
    assert panels[0]["image"][1] == panels[1]["image"][1] and panels[0]["image"][2] < panels[1]["image"][0]


def test_when_the_baseline_is_the_best_the_worst_is_shown_beside_it():
    from ablate.results.html_report import compared_variants

    rows = [{"variant": v, "mean": m} for v, m in (("a=1", 0.7), ("a=2", 0.5), ("a=3", 0.4), ("a=4", None))]
    assert [(r["variant"], role) for r, role in compared_variants(rows, rows[1])] == [
        ("a=1", "best"),
        ("a=2", "baseline"),
    ]
    assert [(r["variant"], role) for r, role in compared_variants(rows, rows[0])] == [
        ("a=1", "best and baseline"),
        ("a=3", "worst"),
    ]
    assert [role for _, role in compared_variants(rows[:1], rows[0])] == ["best and baseline"]


def test_importances_are_shown_only_beside_the_main_effects_with_why_they_differ(study, tmp_path):
    from ablate.results.search_plots import IMPORTANCES_WHY

    report = study / "runs/t/report.html"
    shown = probe(report, PANELS_JS, tmp_path)["importances"]
    assert shown == [{"why": IMPORTANCES_WHY, "effects": 1}]  # one plot, its sentence, the effects table beside it
    bare = tmp_path / "bare.html"
    bare.write_text(report.read_text().replace('<p class="why">', '<p class="gone">'))
    assert probe(bare, PANELS_JS, tmp_path)["importances"] == [{"why": None, "effects": 1}]
