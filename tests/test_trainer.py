"""Integration tests of the DINO-Mix training loop (arXiv 2602.07819) on tiny SYNTHETIC phantoms.

Real NIfTI files, a real (tiny, randomly initialised) DINOv3 teacher saved with ``save_pretrained`` and loaded
through the same ``from_pretrained`` path as real weights, real training on the CPU; only the sizes are small
(48x48x24 phantoms at 4x4x6 mm, 32x32x16 patches, a 4-8-16-32 channel student) so the file runs in about a
minute on 2 busy cores.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import TINY_SHAPE, TINY_SPACING, TINY_TEACHER_HIDDEN

from dinomix_core import cli
from dinomix_core.config import DinoMixConfig, get_preset
from dinomix_core.consistency import sigmoid_rampup
from dinomix_core.phantoms import write_phantom_nifti
from dinomix_core.teacher import build_teacher
from dinomix_core.trainer import DinoMixTrainer, TrainingError, run_training


SHAPE, SPACING = TINY_SHAPE, TINY_SPACING  # the shared `phantoms` fixture (conftest.py)
TEACHER_HIDDEN = TINY_TEACHER_HIDDEN  # the shared `tiny_teacher` fixture (conftest.py)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides) -> DinoMixConfig:
    values = dict(
        patch_size=(32, 32, 16), target_spacing=SPACING, max_iterations=30, channels=(4, 8, 16, 32), val_interval=0,
    )
    values.update(overrides)
    return get_preset("cpu", **values)


def _stop_after(n: int):
    """A should_stop callback (polled before each iteration) that stops after ``n`` iterations."""
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > n

    return stop


def mean_sup(records, sl) -> float:
    return float(np.mean([r["losses"]["sup"] for r in records[sl]]))


# ---------------------------------------------------------------------------------------------- end to end
def test_dinomix_training_end_to_end_with_fkd_then_infer(phantoms, tiny_teacher, tmp_path):
    config = tiny_config(teacher=tiny_teacher)
    assert config.fkd_enabled
    teacher = build_teacher(config.teacher, upsample=config.teacher_upsample, batch_size=config.teacher_batch_size)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    records = []
    out = tmp_path / "run"
    trainer = DinoMixTrainer(
        config, phantoms["labeled"], phantoms["unlabeled"], str(out), progress=records.append, device="cpu",
        teacher_model=teacher,
    )
    assert trainer.cache is not None and trainer.semi_supervised
    summary = trainer.fit()

    # every iteration reported, all DINO-Mix terms live
    assert [r["iteration"] for r in records] == list(range(1, 31))
    for key in ("sup", "unsup", "fkd", "total"):
        assert all(np.isfinite(r["losses"][key]) for r in records), key
    first, last = mean_sup(records, slice(0, 5)), mean_sup(records, slice(-5, None))
    print(f"supervised loss: first 5 iterations {first:.3f}, last 5 {last:.3f}")
    assert last < first
    first_fkd = np.mean([r["losses"]["fkd"] for r in records[:5]])
    last_fkd = np.mean([r["losses"]["fkd"] for r in records[-5:]])
    assert last_fkd < first_fkd  # the projection head learns to match the teacher
    assert len(trainer.cache) == 3  # features of every training volume computed once

    # the teacher is frozen: same weights, no gradients
    after = teacher.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert not teacher.training

    # files
    assert summary["iterations"] == 30 and summary["stopped"] is False and summary["skipped"] == []
    assert (summary["labeled"], summary["unlabeled"], summary["validation"]) == (2, 1, 0)
    model_pt, ckpt_pt = out / "model.pt", out / "checkpoint.pt"
    assert Path(summary["checkpoint"]) == model_pt
    assert model_pt.is_file() and ckpt_pt.is_file() and (out / "summary.json").is_file()
    payload = torch.load(model_pt, map_location="cpu", weights_only=False)
    assert DinoMixConfig.from_dict(payload["config"]) == config
    assert payload["teacher_channels"] == TEACHER_HIDDEN
    assert payload["iteration"] == 30
    assert payload["trained_on"] == {"labeled": ["case0", "case1"], "unlabeled": ["case2"], "validation": []}
    assert any(k.startswith("projection.") for k in payload["model"])
    ckpt = torch.load(ckpt_pt, map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 30 and ckpt["finished"] is True

    # inference through the CLI, in-process: the label lies on the input image's grid
    image = phantoms["unlabeled"][0]
    pred_path = tmp_path / "pred" / "case2_label.nii.gz"
    rc = cli.main(["infer", "--model", str(model_pt), "--image", image, "--output", str(pred_path), "--device", "cpu"])
    assert rc == 0 and pred_path.is_file()
    ref, pred = nib.load(image), nib.load(str(pred_path))
    assert pred.shape == ref.shape == SHAPE
    np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-4)
    arr = np.asarray(pred.dataobj)
    assert arr.dtype == np.uint8 and arr.min() >= 0 and arr.max() <= 13


def test_training_does_not_touch_the_teacher_folder(phantoms, tiny_teacher, tmp_path):
    """run_training loads the teacher from config.teacher itself (live teacher path, teacher_cache=False)."""
    files_before = {p.name: p.read_bytes() for p in Path(tiny_teacher).iterdir() if p.is_file()}
    records = []
    summary = run_training(
        tiny_config(teacher=tiny_teacher, teacher_cache=False, max_iterations=2), phantoms["labeled"],
        phantoms["unlabeled"], str(tmp_path / "live"), progress=records.append, device="cpu",
    )
    assert summary["iterations"] == 2
    assert all("fkd" in r["losses"] and np.isfinite(r["losses"]["fkd"]) for r in records)
    files_after = {p.name: p.read_bytes() for p in Path(tiny_teacher).iterdir() if p.is_file()}
    assert files_after == files_before


def test_live_teacher_has_no_cache_and_is_frozen(phantoms, tiny_teacher, tmp_path):
    config = tiny_config(teacher=tiny_teacher, teacher_cache=False, max_iterations=2)
    teacher = build_teacher(config.teacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = DinoMixTrainer(
        config, phantoms["labeled"], phantoms["unlabeled"], str(tmp_path / "live"), device="cpu", teacher_model=teacher
    )
    assert trainer.cache is None and trainer.stride == 4
    summary = trainer.fit()
    assert summary["iterations"] == 2
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert {"sup", "unsup", "fkd"} <= set(trainer.history[-1])


# ---------------------------------------------------------------------------------------------- resume / warm start
# DiffDW's tracker state and the pseudo-label alignment's running distribution are resumed too
@pytest.mark.parametrize("class_weighting, align", [("none", False), ("distdw_diffdw", True)])
def test_stop_then_resume_continues_from_the_checkpoint(phantoms, tmp_path, class_weighting, align):
    config = tiny_config(max_iterations=6, class_weighting=class_weighting, pseudo_label_alignment=align)
    out = tmp_path / "run"
    calls = {"n": 0}

    def stop_after_three() -> bool:  # polled before each iteration: True on the 4th poll
        calls["n"] += 1
        return calls["n"] > 3

    first = []
    s1 = run_training(
        config, phantoms["labeled"], phantoms["unlabeled"], str(out), progress=first.append, device="cpu",
        should_stop=stop_after_three,
    )
    assert s1["stopped"] is True and s1["iterations"] == 3
    assert [r["iteration"] for r in first] == [1, 2, 3]
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 3 and ckpt["finished"] is False
    assert (ckpt["aligner"] is not None and ckpt["aligner"]["num_updates"] == 3) == align
    if align:
        back = DinoMixTrainer(config, phantoms["labeled"], phantoms["unlabeled"], str(out), device="cpu", resume=True)
        assert back.aligner.num_updates == 3 and torch.equal(back.aligner.predicted, ckpt["aligner"]["predicted"])
    assert [h["iteration"] for h in ckpt["history"]] == [1, 2, 3]

    second = []
    s2 = run_training(
        config, phantoms["labeled"], phantoms["unlabeled"], str(out), progress=second.append, device="cpu",
        resume=True,
    )
    assert s2["stopped"] is False and s2["iterations"] == 6
    assert [r["iteration"] for r in second] == [4, 5, 6]
    payload = torch.load(out / "model.pt", map_location="cpu", weights_only=False)
    assert [h["iteration"] for h in payload["history"]] == [1, 2, 3, 4, 5, 6]
    assert payload["iteration"] == 6
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 6 and ckpt["finished"] is True

    # an uninterrupted run gives the same losses: the sampler, optimiser, EMA, tracker and click-simulation state
    # were restored
    straight = []
    run_training(config, phantoms["labeled"], phantoms["unlabeled"], str(tmp_path / "straight"),
                 progress=straight.append, device="cpu")
    assert config.refiner and all("refiner" in r["losses"] for r in straight)
    for a, b in zip(first + second, straight):
        assert a["iteration"] == b["iteration"]
        for term in ("total", "refiner"):
            assert a["losses"][term] == pytest.approx(b["losses"][term], rel=1e-4, abs=1e-5), (term, a["iteration"])


@pytest.mark.parametrize(
    "first,second",
    [
        (dict(teacher="TINY"), dict(teacher="none")),  # the stopped run has a projection head, the new one none
        (dict(optimizer="sgd", learning_rate=1e-2), dict(optimizer="adamw")),  # incompatible optimiser state
    ],
    ids=["teacher_removed", "optimizer_changed"],
)
def test_resume_after_a_configuration_change_starts_a_new_run(phantoms, tiny_teacher, tmp_path, first, second):
    """The MONAI Label app always trains with resume=True: a stopped checkpoint of an incompatible configuration
    must not make every later run fail (it must be ignored, as a finished or different-channel one is)."""
    fix = lambda d: {k: (tiny_teacher if v == "TINY" else v) for k, v in d.items()}  # noqa: E731
    out = tmp_path / "run"
    s1 = run_training(tiny_config(max_iterations=3, **fix(first)), phantoms["labeled"], phantoms["unlabeled"],
                      str(out), device="cpu", should_stop=_stop_after(1))
    assert s1["stopped"] and s1["iterations"] == 1
    assert torch.load(out / "checkpoint.pt", weights_only=False)["finished"] is False
    records = []
    s2 = run_training(tiny_config(max_iterations=2, **fix(second)), phantoms["labeled"], phantoms["unlabeled"],
                      str(out), device="cpu", progress=records.append, resume=True)
    assert s2["iterations"] == 2 and [r["iteration"] for r in records] == [1, 2]


def test_resume_without_checkpoint_starts_from_zero(phantoms, tmp_path):
    records = []
    s = run_training(
        tiny_config(max_iterations=2, use_pic=False, use_consistency=False), phantoms["labeled"][:1], [],
        str(tmp_path / "fresh"), progress=records.append, device="cpu", resume=True,
    )
    assert s["iterations"] == 2 and [r["iteration"] for r in records] == [1, 2]


def test_warm_start_from_a_model_file(phantoms, tiny_teacher, tmp_path):
    # a model trained with FKD (it has a projection head) warm-starts a student without one
    src = run_training(
        tiny_config(teacher=tiny_teacher, max_iterations=2), phantoms["labeled"], phantoms["unlabeled"],
        str(tmp_path / "a"), device="cpu",
    )["checkpoint"]
    saved = torch.load(src, map_location="cpu", weights_only=False)["model"]
    trainer = DinoMixTrainer(
        tiny_config(max_iterations=1, seed=5), phantoms["labeled"], phantoms["unlabeled"], str(tmp_path / "b"),
        init_checkpoint=src, device="cpu",
    )
    own = trainer.model.state_dict()
    assert trainer.model.projection is None
    shared = [k for k in own if k in saved]
    assert shared == list(own)  # every tensor of the student came from the file
    assert all(torch.equal(own[k], saved[k]) for k in shared)
    # the EMA teacher starts from the warm-started weights too
    ema = trainer.ema.state_dict()
    assert all(torch.equal(ema[k], saved[k]) for k in shared)
    assert trainer.fit()["iterations"] == 1


def test_warm_start_from_unreadable_file_is_a_training_error(phantoms, tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(TrainingError, match="warm-start"):
        DinoMixTrainer(tiny_config(max_iterations=1), phantoms["labeled"], [], str(tmp_path / "o"),
                       init_checkpoint=str(bad), device="cpu")


# ---------------------------------------------------------------------------------------------- data problems
def test_no_labeled_volume_is_a_training_error(phantoms, tmp_path):
    with pytest.raises(TrainingError, match="no usable labeled volume"):
        run_training(tiny_config(max_iterations=1), [], phantoms["unlabeled"], str(tmp_path / "o"), device="cpu")
    assert not (tmp_path / "o" / "model.pt").exists()


def test_corrupt_labeled_file_is_skipped_with_a_message(phantoms, tmp_path):
    bad_img = tmp_path / "broken.nii.gz"
    bad_img.write_bytes(b"\x1f\x8b garbage, not a NIfTI file")
    labeled = phantoms["labeled"][:1] + [(str(bad_img), phantoms["labeled"][1][1])]
    s = run_training(tiny_config(max_iterations=1), labeled, phantoms["unlabeled"], str(tmp_path / "o"), device="cpu")
    assert s["iterations"] == 1 and s["labeled"] == 1
    assert len(s["skipped"]) == 1 and str(bad_img) in s["skipped"][0]
    # only corrupt labeled data: the error names the skipped file
    with pytest.raises(TrainingError, match="broken.nii.gz"):
        run_training(tiny_config(max_iterations=1), labeled[1:], [], str(tmp_path / "o2"), device="cpu")
    # a sampling weight of the skipped case is ignored, the others still apply
    s = run_training(tiny_config(max_iterations=1), labeled, [], str(tmp_path / "o3"), device="cpu",
                     labeled_weights={"broken": 5.0, _case(labeled[0][0]): 2.0})
    assert s["labeled_shares"] == {_case(labeled[0][0]): 1.0}


def test_label_on_another_grid_is_skipped(phantoms, tmp_path):
    img = phantoms["labeled"][0][0]
    small_lab = tmp_path / "small_label.nii.gz"
    write_phantom_nifti(tmp_path / "unused.nii.gz", small_lab, 0, (40, 40, 24), SPACING)
    labeled = [(img, str(small_lab)), phantoms["labeled"][1]]
    s = run_training(tiny_config(max_iterations=1), labeled, [], str(tmp_path / "o"), device="cpu")
    assert s["labeled"] == 1 and len(s["skipped"]) == 1 and "grid" in s["skipped"][0]


# ---------------------------------------------------------------------------------------------- variants, seeds
def test_supervised_only_config(phantoms, tmp_path):
    records = []
    trainer = DinoMixTrainer(
        tiny_config(max_iterations=3, use_pic=False, use_consistency=False), phantoms["labeled"],
        phantoms["unlabeled"], str(tmp_path / "sup"), progress=records.append, device="cpu",
    )
    assert not trainer.semi_supervised and trainer.teacher is None and trainer.cache is None
    s = trainer.fit()
    assert s["iterations"] == 3
    assert all(set(r["losses"]) >= {"sup", "total"} for r in records)
    assert not any({"unsup", "fkd", "confident"} & set(r["losses"]) for r in records)
    assert all(r["losses"]["sup"] == pytest.approx(r["losses"]["total"]) for r in records)


@pytest.mark.parametrize(
    "switches, batches, semi, student_batch",
    [
        # supervised-only: labeled + unlabeled batch sizes of labeled patches (the baselines' supervised recipe)
        (dict(use_pic=False, use_consistency=False), (1, 1), False, 2),
        (dict(use_pic=False, use_consistency=False), (2, 0), False, 2),
        # semi-supervised: the labeled and the unlabeled patches
        (dict(use_pic=True, use_consistency=True, clean_labeled_loss=False), (1, 1), True, 2),
        # the recipe (the cpu preset): the clean labeled patch beside the two mixed ones
        (dict(use_pic=True, use_consistency=True), (1, 1), True, 3),
        (dict(use_pic=False, use_consistency=True), (2, 1), True, 3),
        # no unlabeled batch: supervised on the labeled batch
        (dict(use_pic=True, use_consistency=True), (1, 0), False, 1),
    ],
)
def test_student_batch_of_each_variant(phantoms, tmp_path, switches, batches, semi, student_batch):
    cfg = tiny_config(max_iterations=2, batch_size_labeled=batches[0], batch_size_unlabeled=batches[1], **switches)
    trainer = DinoMixTrainer(cfg, phantoms["labeled"], phantoms["unlabeled"], str(tmp_path / "b"), device="cpu")
    seen = []
    trainer.model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    trainer.train_step(0)
    assert trainer.semi_supervised is semi
    assert seen == [student_batch]


def _case(path) -> str:
    from dinomix_core.data import case_id_from_path

    return case_id_from_path(str(path))


@pytest.mark.parametrize("weights, shares", [({0: 3.0}, [0.75, 0.25]), ({1: 0.0}, [1.0, 0.0])])
def test_labeled_weights_set_where_labeled_patches_come_from(phantoms, tmp_path, monkeypatch, weights, shares):
    import dinomix_core.trainer as trainer_module

    ids = [_case(i) for i, _ in phantoms["labeled"]]
    trainer = DinoMixTrainer(tiny_config(max_iterations=1, use_pic=False, use_consistency=False),
                             phantoms["labeled"], [], str(tmp_path / "w"), device="cpu",
                             labeled_weights={ids[k]: w for k, w in weights.items()})
    assert trainer.labeled_probs.tolist() == pytest.approx(shares)
    by_image, drawn, crop = {id(v.image): v.case_id for v in trainer.labeled}, [], trainer_module.crop
    monkeypatch.setattr(trainer_module, "crop",
                        lambda t, start, size: (drawn.append(by_image.get(id(t))), crop(t, start, size))[1])
    trainer.sample(trainer.labeled, 400, labeled=True)
    drawn = [d for d in drawn if d is not None]
    assert len(drawn) == 400
    assert drawn.count(ids[0]) / 400 == pytest.approx(shares[0], abs=0.06)
    assert trainer.fit()["labeled_shares"] == {i: pytest.approx(p) for i, p in zip(ids, shares)}


@pytest.mark.parametrize("weights, match", [
    ({"no_such_case": 1.0}, "not labeled training volumes"),
    ("negative", "finite and >= 0"),
    ("all_zero", "positive sum"),
])
def test_bad_labeled_weights_are_a_value_error(phantoms, tmp_path, weights, match):
    ids = [_case(i) for i, _ in phantoms["labeled"]]
    if weights == "negative":
        weights = {ids[0]: -1.0}
    elif weights == "all_zero":
        weights = {i: 0.0 for i in ids}
    with pytest.raises(ValueError, match=match):
        DinoMixTrainer(tiny_config(max_iterations=1), phantoms["labeled"], [], str(tmp_path / "w"), device="cpu",
                       labeled_weights=weights)


def test_same_seed_same_first_iteration_loss(phantoms, tmp_path):
    def first_loss(seed: int, name: str) -> dict:
        rec = []
        run_training(tiny_config(max_iterations=1, seed=seed), phantoms["labeled"], phantoms["unlabeled"],
                     str(tmp_path / name), progress=rec.append, device="cpu")
        return rec[0]["losses"]

    a, b, c = first_loss(3, "a"), first_loss(3, "b"), first_loss(4, "c")
    assert a == b
    assert a["total"] != c["total"]


def test_validation_reports_per_organ_dice(phantoms, tmp_path):
    s = run_training(
        tiny_config(max_iterations=2, use_pic=False, use_consistency=False), phantoms["labeled"][:1], [],
        str(tmp_path / "v"), validation=phantoms["labeled"][1:], device="cpu",
    )
    assert isinstance(s["best_metric"], float) and 0.0 <= s["best_metric"] <= 1.0
    assert set(s["per_organ_dice"]) == set(get_preset("cpu").label_names)
    assert all(v is None or 0.0 <= v <= 1.0 for v in s["per_organ_dice"].values())


@pytest.mark.parametrize("use_pic", [False, True])
def test_the_consistency_ramp_scales_the_pseudo_label_loss(phantoms, tmp_path, use_pic):
    """total = sup (+ gt_box with PIC) + λ(t) * unsup, with λ(t) = consistency_weight * sigmoid ramp (no FKD)."""
    config = tiny_config(max_iterations=6, teacher="none", use_fkd=False, use_pic=use_pic, use_consistency=True,
                         consistency_weight=0.5, rampup_fraction=0.5)
    records = []
    DinoMixTrainer(config, phantoms["labeled"], phantoms["unlabeled"], str(tmp_path / "run"),
                   progress=records.append, device="cpu").fit()
    for r in records:
        losses = r["losses"]
        lam = 0.5 * sigmoid_rampup(r["iteration"] - 1, 0.5 * 6)
        assert losses["ramp"] == pytest.approx(lam / 0.5)
        expected = losses["sup"] + losses.get("gt_box", 0.0) + lam * losses["unsup"]
        assert losses["total"] == pytest.approx(expected, rel=1e-5)
        assert ("gt_box" in losses) == use_pic
    assert records[0]["losses"]["ramp"] == pytest.approx(math.exp(-5.0))  # the pseudo-labels start almost ignored


def test_warm_up_is_supervised_then_the_teacher_restarts_from_the_student(phantoms, tmp_path):
    config = tiny_config(max_iterations=4, warmup_fraction=0.5, use_fkd=False, teacher="none")
    trainer = DinoMixTrainer(config, phantoms["labeled"], phantoms["unlabeled"], str(tmp_path / "w"), device="cpu")
    seen, restarts = [], []
    trainer.model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    load = trainer.ema.load_state_dict
    trainer.ema.load_state_dict = lambda state: (restarts.append({k: v.clone() for k, v in state.items()}), load(state))
    warm_logs = [trainer.train_step(it) for it in range(2)]
    assert trainer.warmup_iterations == 2 and seen == [2, 2]  # supervised: labeled + unlabeled batch of labeled
    assert not any("unsup" in logs for logs in warm_logs) and restarts == []
    student = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    logs = trainer.train_step(2)
    assert len(restarts) == 1 and all(torch.equal(restarts[0][k], student[k]) for k in student)
    assert {"unsup", "gt_box"} <= set(logs) and logs["ramp"] == pytest.approx(math.exp(-5.0))


def test_clean_labeled_loss_adds_the_unmixed_labeled_patches(phantoms, tmp_path):
    config = tiny_config(max_iterations=1, clean_labeled_loss=True, pic_shared_box=True, class_weighting="distdw",
                         use_fkd=False, teacher="none")
    trainer = DinoMixTrainer(config, phantoms["labeled"], phantoms["unlabeled"], str(tmp_path / "c"), device="cpu")
    seen = []
    trainer.model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    logs = trainer.train_step(0)
    assert seen == [3] and {"sup", "unsup", "gt_box"} <= set(logs)  # clean labeled + mixed labeled + mixed unlabeled


@pytest.mark.parametrize("weighting", ["distdw", "diffdw", "distdw_diffdw"])
def test_class_weights_of_a_step(phantoms, tmp_path, weighting):
    """DistDW from the tracked frequencies, DiffDW from the student's Dice on the ground-truth voxels, or both."""
    from dinomix_core.losses import DifficultyTracker, distdw_weights, floor_mean_one

    config = tiny_config(max_iterations=2, class_weighting=weighting, use_fkd=False, teacher="none")
    trainer = DinoMixTrainer(config, phantoms["labeled"], phantoms["unlabeled"], str(tmp_path / "w"), device="cpu")
    assert (trainer.difficulty is None) == (weighting == "distdw")
    seen = []
    trainer.class_weights = lambda *a, _f=trainer.class_weights: seen.append((a, _f(*a))) or seen[-1][1]
    trainer.train_step(0)
    (logits, target, gt_mask), weights = seen[0]
    assert gt_mask.shape == target.shape and gt_mask.any() and not gt_mask.all()  # the labeled rows' GT voxels
    freq = trainer.tracker.frequencies
    if weighting == "distdw":
        expected = distdw_weights(freq, config.class_weight_floor)
    else:
        fresh = DifficultyTracker(config.out_channels, config.diffdw_accumulate_iters)
        scores = fresh.update(logits.argmax(1), target, gt_mask)
        assert torch.equal(trainer.difficulty.seen, fresh.seen) and trainer.difficulty.seen.any()
        expected = floor_mean_one(scores * (distdw_weights(freq, 0.0) if weighting == "distdw_diffdw" else 1.0),
                                  config.class_weight_floor)
    assert torch.allclose(weights, expected) and weights.mean().item() == pytest.approx(1.0)


def test_unknown_class_weighting_is_refused():
    with pytest.raises(ValueError, match="class_weighting"):
        tiny_config(class_weighting="focal")
    with pytest.raises(ValueError, match="diffdw_accumulate_iters"):
        tiny_config(diffdw_accumulate_iters=0)


@pytest.mark.parametrize("lcc", [False, True])
def test_pseudo_label_lcc_masks_the_teachers_scattered_pieces(phantoms, tmp_path, lcc):
    """With pseudo_label_lcc the step's confidence mask is the threshold's and each organ's largest component."""
    from dinomix_core.consistency import largest_component_mask, pseudo_labels

    config = tiny_config(max_iterations=1, use_fkd=False, teacher="none", pseudo_label_lcc=lcc,
                         confidence_threshold=0.0)
    trainer = DinoMixTrainer(config, phantoms["labeled"], phantoms["unlabeled"], str(tmp_path / "l"), device="cpu")
    unl = trainer.sample(trainer.unlabeled, 1, labeled=False)
    labels, conf = trainer.pseudo_label(unl)
    with torch.no_grad():
        raw, _, _ = pseudo_labels(trainer.ema(unl.weak if unl.weak is not None else unl.image).float(), 0.0)
    assert torch.equal(labels, raw)  # the labels themselves are never changed
    expected = largest_component_mask(raw).float() if lcc else torch.ones_like(conf)
    assert torch.equal(conf, expected)
    assert (conf == 0).any() == lcc  # an untrained teacher's argmax is scattered: LCC masks some of it


def test_warm_start_head_carries_over_the_shared_organs():
    """A model for (spleen, liver, aorta) warm-starts one for (liver, tumour, spleen): background and the two
    shared organs' output rows move to their new ids; the tumour row keeps its initialisation."""
    from dinomix_core.trainer import _head_rows

    theirs = {"head.conv.weight": torch.arange(4.0).view(4, 1, 1, 1, 1).expand(4, 2, 1, 1, 1).clone(),
              "head.conv.bias": torch.tensor([10.0, 11.0, 12.0, 13.0]), "enc.weight": torch.ones(3)}
    own = {"head.conv.weight": torch.full((4, 2, 1, 1, 1), -1.0), "head.conv.bias": torch.full((4,), -1.0),
           "enc.weight": torch.zeros(3)}
    out = _head_rows(own, theirs, ("spleen", "liver", "aorta"), ("liver", "tumour", "spleen"))
    assert sorted(out) == ["head.conv.bias", "head.conv.weight"]
    assert out["head.conv.bias"].tolist() == [10.0, 12.0, -1.0, 11.0]
    assert out["head.conv.weight"][:, 0].flatten().tolist() == [0.0, 2.0, -1.0, 1.0]
    assert own["head.conv.bias"].tolist() == [-1.0] * 4  # the student's own tensors are not modified


@pytest.mark.parametrize("align, semi", [(False, True), (True, True), (True, False)])
def test_pseudo_label_alignment_towards_the_labeled_volumes(phantoms, tmp_path, align, semi):
    """With pseudo_label_alignment the step's pseudo-labels are read from the teacher's aligned probabilities, the
    target being the class shares of uniformly drawn patches of the labeled volumes; supervised-only training has
    nothing to align."""
    from dinomix_core.consistency import pseudo_labels
    from dinomix_core.data import patch_coverage

    config = tiny_config(max_iterations=1, use_fkd=False, teacher="none", pseudo_label_alignment=align,
                         use_pic=semi, use_consistency=semi, confidence_threshold=0.0)
    trainer = DinoMixTrainer(config, phantoms["labeled"], phantoms["unlabeled"], str(tmp_path / "a"), device="cpu")
    assert (trainer.aligner is not None) == (align and semi)
    if trainer.aligner is None:
        return
    shares = [torch.stack([(patch_coverage(v.shape, config.patch_size) * (v.label == c)).sum()
                           for c in range(config.out_channels)]) / np.prod(config.patch_size) for v in trainer.labeled]
    assert all(float(x.sum()) == pytest.approx(1.0) for x in shares)  # each patch holds exactly its voxels
    assert torch.allclose(trainer.aligner.target, sum(shares) / len(shares))
    whole = sum(torch.bincount(v.label.reshape(-1).long(), minlength=config.out_channels).double()
                for v in trainer.labeled)
    assert not torch.allclose(trainer.aligner.target, whole / whole.sum(), rtol=0.05)  # not the volumes' shares
    unl = trainer.sample(trainer.unlabeled, 2, labeled=False)
    labels, conf = trainer.pseudo_label(unl)
    with torch.no_grad():
        logits = trainer.ema(unl.weak if unl.weak is not None else unl.image).float()
    assert trainer.aligner.num_updates == 1
    assert torch.allclose(trainer.aligner.predicted.float(), torch.softmax(logits, 1).mean((0, 2, 3, 4)), atol=1e-5)
    aligned, aconf, _ = pseudo_labels(logits, 0.0, config.pseudo_label_lcc, align=trainer.aligner)
    raw, _, _ = pseudo_labels(logits, 0.0, config.pseudo_label_lcc)
    assert torch.equal(labels, aligned) and torch.equal(conf, aconf)
    # an untrained teacher over-predicts some organs: they are damped, so fewer voxels are labeled as them
    damped = [c for c in range(1, config.out_channels) if trainer.aligner.ratio()[c] < 1]
    assert damped and sum(int((labels == c).sum()) for c in damped) < sum(int((raw == c).sum()) for c in damped)


def test_intensity_curve_reaches_only_the_students_view_of_unlabeled_patches(phantoms, tmp_path):
    """``aug_curve_prob``: the same seed gives the same labeled patch and teacher view, another student view."""
    views = {}
    for prob in (0.0, 1.0):
        config = tiny_config(max_iterations=2, use_fkd=False, teacher="none", augment=True, aug_curve_prob=prob)
        trainer = DinoMixTrainer(config, phantoms["labeled"], phantoms["unlabeled"], str(tmp_path / str(prob)),
                                 device="cpu")
        views[prob] = (trainer.sample(trainer.labeled, 1, labeled=True), trainer.sample(trainer.unlabeled, 1,
                                                                                         labeled=False))
        assert math.isfinite(trainer.train_step(0)["total"])
    (lab0, unl0), (lab1, unl1) = views[0.0], views[1.0]
    assert torch.equal(lab0.image, lab1.image) and torch.equal(unl0.weak, unl1.weak)
    assert float((unl0.image - unl1.image).abs().max()) > 0.01
