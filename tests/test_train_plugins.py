"""Plug-in contract: a custom objective with its own batch field, a label vocabulary saved with checkpoints, and a
registered evaluation task."""

from __future__ import annotations

import json

import pytest
import torch

from radfinder.errors import ConfigError
from radfinder.losses.registry import Objective, StepTerm, register_objective
from radfinder.text.vocabulary import CTRATE18, LabelVocabulary, read_vocabulary, resolve_vocabulary
from radfinder.train.fields import register_batch_field
from radfinder.train.toy import make_toy_cohort, toy_train_config
from radfinder.train.trainer import Trainer, train


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    torch.set_num_threads(1)
    return make_toy_cohort(tmp_path_factory.mktemp("toy"), 12, seed=5)


def _row_weight(rows, ctx):
    # a per-sample field from the record and the sample index (deterministic, rank-independent)
    return torch.tensor([1.0 + (int(r.record.key[-2:]) % 3) for r in rows], dtype=torch.float64)


def _weighted_norm(ctx):
    w = ctx.batch_field("test_row_weight")
    x = ctx.leaves["disease"]
    local = (w * (x**2).sum(-1)).sum()
    n = ctx.count_global
    return StepTerm(loss=local / n, value_sum=float(local.detach()))


register_batch_field("test_row_weight", _row_weight, replace=True)
register_objective(Objective("test_weighted_norm", leaves=("disease",), batch_fields=("test_row_weight",),
                             loss=_weighted_norm, count=lambda mbs: float(sum(len(mb) for mb in mbs))),
                   replace=True)


def test_custom_objective_with_a_batch_field_gets_the_direct_gradient(cohort, tmp_path):
    cfg = toy_train_config(cohort, precision="fp64", batch={"micro": 3, "accum": 2},
                           losses={"weights": {"siglip": 1.0, "test_weighted_norm": 0.5}})
    tr = Trainer(cfg, tmp_path / "run", show_progress=False)
    stats = tr.compute_gradients(0, verify=True)
    got = {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    tr.optimizer.zero_grad(set_to_none=True)
    m, mbs = tr.model, tr.micro_batches(0)
    assert all(mb.extras["test_row_weight"].dtype == torch.float64 for mb in mbs)
    dis, img, txt, wts = [], [], [], []
    for mb in mbs:
        g = m.encode_features_global(mb.cls, mb.patch_average, mb.window_mask, mb.grid_size)
        tok = m.tokenize(mb.texts)
        dis.append(g.disease)
        img.append(g.retrieval)
        txt.append(m.encode_text(tok["input_ids"], tok["attention_mask"]))
        wts.append(mb.extras["test_row_weight"])
    from radfinder.losses import siglip_loss

    w = torch.cat(wts)
    mine = (w * (torch.cat(dis) ** 2).sum(-1)).sum() / 6
    sig = siglip_loss(torch.cat(img), torch.cat(txt), m.criterion.t, m.criterion.b).loss
    (sig + 0.5 * mine).backward()
    assert stats.terms["test_weighted_norm"] == pytest.approx(float(mine.detach()), rel=1e-12)
    assert stats.loss == pytest.approx(float((sig + 0.5 * mine).detach()), rel=1e-12)
    for n, p in m.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(got[n], p.grad, rtol=1e-9, atol=1e-12, msg=lambda s, n=n: f"{n}: {s}")


def test_missing_batch_field_provider_is_a_clear_error(cohort, tmp_path):
    register_objective(Objective("test_needs_field", leaves=("image",), batch_fields=("no_such_field",),
                                 loss=lambda ctx: None), replace=True)
    cfg = toy_train_config(cohort, losses={"weights": {"test_needs_field": 1.0}})
    with pytest.raises(ConfigError, match="no provider registered for batch field.*no_such_field"):
        Trainer(cfg, tmp_path / "run", show_progress=False)


def test_label_vocabulary_in_config_and_checkpoint(cohort, tmp_path):
    from radfinder.models.radfinder import RadFinderModel

    assert resolve_vocabulary("ctrate18") is CTRATE18 and len(CTRATE18) == 18
    with pytest.raises(ConfigError, match="unknown label vocabulary 'nope'.*ctrate18"):
        resolve_vocabulary("nope")
    cfg = toy_train_config(cohort, schedule={"epochs": 1, "max_steps": 1})
    res = train(cfg, tmp_path / "run")
    ckpt = res.last_checkpoint / "model"
    assert json.loads((ckpt / "labels.json").read_text()) == {"name": "ctrate18", "findings": list(CTRATE18.findings)}
    assert "vocabulary: ctrate18" in (tmp_path / "run/config.yaml").read_text()
    assert RadFinderModel.from_pretrained(ckpt).label_vocabulary == CTRATE18
    (ckpt / "labels.json").unlink()  # a checkpoint from before vocabularies
    assert read_vocabulary(ckpt) == CTRATE18 and RadFinderModel.from_pretrained(ckpt).label_vocabulary == CTRATE18


def test_another_vocabulary_trains_from_its_own_label_table(cohort, tmp_path):
    sub = LabelVocabulary(name="toy3", findings=("Emphysema", "Lung nodule", "Cardiomegaly"))
    rows = [json.loads(x) for x in open(cohort["manifest"]).read().splitlines()]
    table = tmp_path / "labels.csv"
    table.write_text("id," + ",".join(sub.findings) + "\n" + "".join(
        f"{r['id']}," + ",".join(str(r[f]) for f in sub.findings) + "\n" for r in rows))
    base = toy_train_config(cohort).data.model_dump()
    ds = {**base["datasets"][0], "labels_csv": str(table)}
    cfg = toy_train_config(cohort, schedule={"epochs": 1, "max_steps": 1},
                           data={**base, "datasets": [ds], "vocabulary": sub.model_dump()})
    tr = Trainer(cfg, tmp_path / "run", show_progress=False)
    assert tr.prompt_shape[0] == 3 and tr.micro_batches(0)[0].labels.shape[1] == 3
    res = tr.run()
    assert read_vocabulary(res.last_checkpoint / "model") == sub
    with pytest.raises(ConfigError, match="labels_csv"):
        Trainer(toy_train_config(cohort, data={**base, "vocabulary": sub.model_dump()}), tmp_path / "r2")


def test_registered_evaluation_task_writes_its_metrics(tmp_path, capsys):
    """A task registered from outside the package runs through `radfinder evaluate --task` (CLI, dataset loading by
    kind, embedding, task registry, metrics.json), and its metric equals NumPy on embeddings made by the public
    per-scan API (`encode_volume`), a separate path from the evaluation's batched embedding."""
    import numpy as np

    from helpers_library import make_checkpoint, make_manifest
    from radfinder.api import encode_volume, load_model
    from radfinder.cli import main
    from radfinder.data.registry import load_dataset
    from radfinder.eval.evaluate import resolve_tasks
    from radfinder.eval.registry import EvalTask, TaskContext, get_task, register_task

    def run(ctx: TaskContext):
        norms = np.linalg.norm(ctx.emb.retrieval, axis=1)
        return {"n_volumes": len(ctx.records), "mean_norm": float(norms.mean()),
                "norms": {k: float(v) for k, v in zip(ctx.emb.keys, norms, strict=True)}}

    register_task(EvalTask("test-norms", run, kinds=("test-kind",), aliases=("test_norms",)), replace=True)
    assert resolve_tasks(["test_norms", "retrieval"], "ctrate", False) == ["test-norms", "retrieval"]
    assert resolve_tasks(["all"], "test-kind", False) == ["test-norms"]
    assert resolve_tasks(["all"], "ctrate", True) == ["retrieval", "zero-shot", "localization"]
    assert get_task("zeroshot").name == "zero-shot"

    ckpt = make_checkpoint(tmp_path / "ckpt")
    manifest = make_manifest(tmp_path / "data")
    rc = main(["evaluate", str(ckpt), "--data", str(manifest), "--kind", "manifest", "--split", "test",
               "--task", "test_norms", "--out", str(tmp_path / "ev"), "--n-boot", "0", "--device", "cpu", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    got = json.loads((tmp_path / "ev" / "metrics.json").read_text())["test-norms"]
    assert json.loads(out.out)["test-norms"] == got  # --json prints what it wrote
    records = load_dataset("manifest", manifest, "test")
    model = load_model(ckpt, device="cpu")
    want = np.array([np.linalg.norm(encode_volume(model, r.path).retrieval.astype(np.float64)) for r in records])
    assert got["n_volumes"] == len(records) == 5 and list(got["norms"]) == [r.key for r in records]
    assert [got["norms"][r.key] for r in records] == pytest.approx(list(want), rel=1e-4)
    assert got["mean_norm"] == pytest.approx(float(want.mean()), rel=1e-4)
    assert np.ptp(want) > 10 * 1e-4 * want.mean()  # norms differ beyond the tolerance: a mix-up of volumes shows


def test_report_anatomy_field_is_specific_to_the_record_not_its_key():
    from types import SimpleNamespace

    from radfinder.train.fields import FieldContext, FieldRow, report_abnormal_anatomies

    def row(findings):
        rec = SimpleNamespace(key="same_key", findings=findings, impressions="",
                              report_text=f"Findings: {findings}\nImpressions: \n")
        return FieldRow(0, None, rec, 0, None, lambda c: c, False)

    ctx = FieldContext(0, ())
    a = report_abnormal_anatomies([row("A large pleural effusion in the left lung.")], ctx)
    b = report_abnormal_anatomies([row("No abnormality.")], ctx)
    assert a.dtype == torch.bool and a.any() and not b.any()
