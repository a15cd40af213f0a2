"""Every registered report drawn from hand-made tables: its title says what it shows, every panel has both
axis labels, every init (or leaderboard arm) is named in a legend or a direct label, log axes read in
plain numbers, and each init keeps its colour across figures. The registry is enumerated, so a new
report is covered: give it data in ``SAMPLES`` when the shared hand-made tables do not fit it.
Checks the figure objects (titles, labels, legend entries), not pixels."""
from __future__ import annotations

import itertools

import pandas as pd
import pytest

from warmstart.reports import style as report_style
from warmstart.reports import PAPER_TITLES, REPORTS, palette, style_of

INITS = (("random", True, "target"), ("warm", False, "baseline"), ("sp shrink=0.3", False, "remedy"))


def summary(models=("logreg", "mlp"), lrs=(0.001, 0.01), fractions=(1.0,)):
    rows = []
    for model, seed, lr, fraction in itertools.product(models, range(3), lrs, fractions):
        common = dict(dataset="d", model=model, optimizer="adam", seed=seed, lr=lr, batch_size=128, fraction=fraction,
                      condition="none", protocol="batch", train_time_s=2.0 + seed, init_time_s=0.1, epochs=10,
                      converged=True, samples_seen=1000, init_samples=0, checkpoint_epoch=None)
        rows.append({**common, "phase": 1, "init": "random", "baseline": True, "role": "phase1", "remedy": None,
                     "setting": None, "val_acc": 0.5, "corr_with_start": None})
        for k, (init, baseline, role) in enumerate(INITS):
            acc = 0.6 + 0.05 * (k == 0) + 0.02 * (k == 2) + 0.01 * seed + 0.1 * fraction + 0.01 * (lr > 0.005)
            rows.append({**common, "phase": 2, "init": init, "baseline": baseline, "role": role,
                         "remedy": init.split()[0], "setting": init, "val_acc": acc,
                         "corr_with_start": None if baseline else 0.9 - 0.1 * seed - 0.2 * (lr > 0.005)})
    return pd.DataFrame(rows)


def epochs():
    rows = []
    for seed in range(3):
        common = dict(dataset="d", model="mlp", optimizer="adam", seed=seed, grad_norm_train=1.0, grad_norm_old=0.5,
                      grad_norm_new=2.0)
        for epoch in range(1, 9):
            rows.append({**common, "phase": 1, "init": "random", "baseline": True, "epoch": epoch,
                         "run_id": f"p{seed}", "parent_run_id": None, "checkpoint_epoch": None,
                         "train_acc": min(1.0, 0.5 + 0.1 * epoch), "val_acc": 0.3 + 0.02 * epoch})
        for init, baseline, _ in INITS:
            for checkpoint in ((None,) if baseline else (4, 8)):
                for epoch in range(1, 6):
                    rows.append({**common, "phase": 2, "init": init, "baseline": baseline, "epoch": epoch,
                                 "run_id": f"{init}{checkpoint}{seed}", "checkpoint_epoch": checkpoint,
                                 "parent_run_id": None if baseline else f"p{seed}", "train_acc": 0.2 * epoch,
                                 "val_acc": 0.5 + 0.03 * epoch - 0.01 * (checkpoint or 0)})
    return pd.DataFrame(rows)


def rounds():
    rows = []
    for seed, rnd in itertools.product(range(3), range(1, 4)):
        for init, baseline, role in INITS:
            rows.append(dict(dataset="d", model="mlp", optimizer="adam", policy="random", seed=seed, init=init,
                             baseline=baseline, role=role, remedy=init.split()[0], setting=init, protocol="online",
                             stream_id=f"{init}{seed}", round=rnd, n_samples=100 * rnd,
                             val_acc=0.4 + 0.05 * rnd + 0.05 * baseline, train_time_s=1.0 + (not baseline),
                             cumulative_train_time_s=rnd * (1.0 + baseline), cumulative_samples=1000 * rnd,
                             converged=True))
    return pd.DataFrame(rows)


TABLES = {"summary": summary, "epochs": epochs, "rounds": rounds}
# reports the shared tables above do not fit: report name -> {table: builder}
SAMPLES = {"transfer": {"summary": lambda: summary(models=("mlp",), lrs=(0.001,), fractions=(0.01, 0.1, 1.0))}}
# the experiment whose title each report is checked under (the paper's figure it draws, when it draws one)
EXPERIMENT = {"table": "table1", "curves": "fig1", "online": "fig2", "transfer": "fig3", "sweep": "fig4",
              "correlation": "fig5", "gradients": "fig6", "checkpoints": "fig7", "conditions": "table2",
              "inits": "table3", "leaderboard": "leaderboard"}


def texts(fig) -> set[str]:
    from matplotlib.text import Text

    found = {t.get_text() for t in fig.findobj(Text) if t.get_text()}
    for ax in fig.axes:  # a table's cells
        for table in ax.tables:
            found |= {cell.get_text().get_text() for cell in table.get_celld().values()}
    return found


@pytest.fixture
def drawn(monkeypatch):
    """The figures reports save, as (figure, path), kept open until the test ends."""
    figures = []
    monkeypatch.setattr(report_style, "FIGURE_HOOKS", [lambda fig, path: figures.append((fig, path))])
    yield figures


@pytest.mark.parametrize("name", list(REPORTS))
def test_every_report_has_a_title_axis_labels_and_names_every_init(name, tmp_path, drawn):
    report = REPORTS[name]
    frames = [SAMPLES.get(name, {}).get(t, TABLES[t])() for t in report.tables]
    experiment = EXPERIMENT.get(name, name)
    outputs = [tmp_path / f"{name}.{ext}" for ext in report.outputs]
    report.draw(*frames, *outputs, title=report.title(experiment))
    assert (tmp_path / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    assert (tmp_path / f"{name}.png").exists()  # the HTML report's copy of the same figure
    assert drawn, f"report {name!r} saved no figure through report_style.save"
    fig, _ = drawn[-1]
    title = fig._suptitle.get_text() if fig._suptitle else ""
    assert title == report.title(experiment) and title
    if experiment in PAPER_TITLES:
        assert title.split(":")[0] in ("Table 1", "Figure 1", "Figure 2", "Figure 3", "Figure 4", "Figure 5",
                                       "Figure 6", "Figure 7", "Table 2", "Table 3", "Leaderboard")
    fig.canvas.draw()
    for ax in fig.axes:
        if not ax.axison:
            continue  # a table
        assert ax.get_xlabel() and ax.get_ylabel(), f"{name}: a panel without axis labels ({ax.get_title()!r})"
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_ticklabels():
                assert "times" not in tick.get_text() and "^" not in tick.get_text(), tick.get_text()
    names = texts(fig)
    shown = {init for init, *_ in INITS}
    if name in ("leaderboard", "advice"):
        shown = {init.split()[0] for init in shown}  # arms are labelled by remedy (advice: "sp (shrink=...)")
    if name == "correlation":
        shown -= {"random"}  # Figure 5 shows only warm-started models
    if name in ("gradients",):
        shown = {f"warm: new half", "random: all data"}
    missing = {s for s in shown if not any(s in t for t in names)}
    assert not missing, f"{name}: {missing} named nowhere (legend, label or cell)"


def test_an_init_keeps_its_colour_in_every_figure_and_settings_get_shades():
    assert palette(["random", "warm"])["warm"] == palette(["warm", "sp", "dash", "random"])["warm"]
    assert style_of("sp shrink=0.3 perturb=0.01") == style_of("sp")
    assert style_of("some_new_remedy") == style_of("some_new_remedy")  # stable for unknown labels too
    shades = palette(["noisy std=0.1", "noisy std=0.01", "noisy std=0"])
    assert len(set(shades.values())) == 3


def test_log_axes_read_in_plain_numbers(drawn):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0.02, 0.5, 1.0, 3.0], [1, 2, 3, 4])
    report_style.log_axis(ax, "x")
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert {"0.05", "0.1", "0.5", "1", "2"} <= set(labels), labels
    plt.close(fig)


def leaderboard_rows(arms=16, models=("resnet18", "vit"), protocols=("batch", "online")):
    """The statistics rows of a leaderboard of ``arms`` arms (random and warm among them)."""
    names = ["random", "warm"] + [f"remedy_{k}" for k in range(arms - 2)]
    rows = []
    for protocol, model, (k, arm) in itertools.product(protocols, models, enumerate(names)):
        diff = 0.03 if arm == "random" else 0.0 if arm == "warm" else 0.015 + 0.001 * (k % 5)
        rows.append(dict(protocol=protocol, dataset="cifar10", model=model, optimizer="sgd", remedy=arm,
                         setting=arm, role="target" if arm == "random" else "baseline" if arm == "warm" else "remedy",
                         grid_size=1, interventions="", status="", report_split="test", val_acc_mean=0.9,
                         val_acc_std=0.01, test_acc_mean=0.88 + diff, test_acc_std=0.01, test_vs_warm_mean=diff,
                         test_vs_warm_low=diff - 0.01, test_vs_warm_high=diff + 0.01, test_vs_random_mean=diff - 0.03,
                         test_vs_random_low=diff - 0.04, test_vs_random_high=diff - 0.02, test_gap_mean=0.03,
                         test_gap_low=0.02, test_gap_high=0.04, paired_seeds=3, gap_exists=True,
                         gap_closed=diff / 0.03, units_reset_mean=float("nan"),
                         time_rel=1.0 if arm == "random" else 0.5 + 0.02 * (k % 4), samples_rel=1.0 if arm == "random"
                         else 0.4 + 0.03 * (k % 3), time_s=1.0, stacked_seeds=1.0, time_comparable=True,
                         seeds=3, converged=3))
    return pd.DataFrame(rows)


def test_the_leaderboard_chart_labels_16_arms_in_4_panels_without_overlap(tmp_path, drawn):
    from warmstart.reports import leaderboard_chart

    best = leaderboard_rows()
    leaderboard_chart(best, tmp_path / "l.pdf", title="t")
    fig, _ = drawn[-1]
    fig.canvas.draw()
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 8  # per protocol a row against samples and one against time
    assert {ax.get_title() for ax in panels} == {f"{p}: cifar10 / {m} / sgd" for p in
                                                 ("batch (phase 2)", "online (final round)") for m in ("resnet18", "vit")}
    assert sum(ax.get_xlabel().startswith("compute: samples") for ax in panels) == 4
    assert sum(ax.get_xlabel().startswith("compute: time") for ax in panels) == 4
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    for ax in panels:
        labels = [t for t in ax.texts if t.get_text() in set(best["remedy"])]
        assert sorted(t.get_text() for t in labels) == sorted(set(best["remedy"]))  # every point labelled
        # the text alone (an annotation's own extent includes its leader line)
        boxes = sorted((Text.get_window_extent(t, renderer) for t in labels), key=lambda b: b.y0)
        for lower, upper in zip(boxes, boxes[1:]):
            assert lower.y1 <= upper.y0 + 0.5, "two arm labels overlap"
