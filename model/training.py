"""Training: face-crop sequences with self-blended fakes and compression, early-stopped on hard validation."""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .augment import BLEND_REGIONS, Degradation, Glasses, SelfBlend, pixel_scale
from .dataset import Clip, identity_components, load_cached, prepare_cache, read_manifest, shown_path, split_by_identity
from .evaluation import fit_calibration_on_qualities, log_loss, roc_auc
from .faces import UPRIGHT_FROM_DEGREES
from .network import ClipModel, DeepfakeNet, EnsembleNet, NetworkConfig, pick_device, save_checkpoint, to_input

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    manifest: str
    root: str | None = None
    cache_dir: str = str(Path.home() / ".cache" / "deepfake-detector" / "crops")
    out: str = "weights/detector.pt"
    encoder: str = "mobilenet_v2"
    imagenet_weights: str | None = None
    hidden_size: int = 256
    image_size: int = 112
    steps: int = 1500
    # 48 frames a step as 16 short sequences: more people a step. Cross-validated four times, it
    # beat 8 × 6 in log loss at every quality (see weights/detector.md); 4 × 12 and 2 × 24 did
    # worse, 24 × 2 no better, 48 × 1 worse.
    clips_per_batch: int = 16
    frames_per_clip: int = 3
    # Early encoder blocks keep their ImageNet weights: backpropagating through the
    # high-resolution layers is most of the cost on a CPU.
    frozen_blocks: int = 4
    # Keeping ImageNet's batch-norm statistics trained slower and worse here (AUC 0.50 vs 0.63 on
    # the hard validation after 300 steps), so by default they adapt.
    freeze_batchnorm: bool = False
    # False: the fakes are only self-blended ones (as in the SBI paper), so no manipulation
    # method's own artefacts are learnt.
    dataset_fakes: bool = True
    # Batches of real/fake pairs from one identity group (see SequenceSampler).
    paired: bool = False
    # Self-blends over varied face regions (augment.BLEND_REGIONS), not only the whole face.
    blend_regions: bool = False
    # Data set fakes drawn method first, so each manipulation method is an equal share of them
    # (else a method's share follows its clip count).
    balance_methods: bool = False
    # Manipulation methods whose fakes are left out of training (validation keeps them): how the
    # recipe does on a method it never saw.
    exclude_methods: list[str] = field(default_factory=list)
    # Networks trained alike but for their seeds (seed, seed + 1, …), their logits averaged: the
    # seed alone moves a single network's held-out AUC by up to 0.05.
    members: int = 1
    # Sharpness-aware minimisation (Foret et al., 2021; the SBI paper trains with it): each step
    # takes the gradient at weights moved `sam_rho` uphill, seeking flat minima. 0 = plain steps;
    # otherwise a step costs two passes through the network.
    sam_rho: float = 0.0
    # Weights averaged over every step from this one to the last (stochastic weight averaging,
    # Izmailov et al., 2018; averaged densely as SWAD, Cha et al., 2021, does for unseen domains):
    # evaluated and kept in place of the step's own weights. 0 = off.
    average_from: int = 0
    # Share of sequences with a square of every frame hidden (cutout, DeVries & Taylor, 2017), so
    # that no one part of the face decides alone. 0 = off.
    erase_prob: float = 0.0
    # Share of sequences, real and fake alike, with spectacles drawn on every frame
    # (augment.Glasses), so that the rims around the eyes are not taken for a blend's seam. 0 = off.
    glasses_prob: float = 0.0
    # Share of sequences, real and fake alike, turned grey (black and white footage hid fakes: the
    # held-out AUC fell to 0.71 from 0.79). 0 = off.
    grey_prob: float = 0.0
    # Share of sequences, real and fake alike, turned by one angle within ±faces.UPRIGHT_FROM_DEGREES
    # (a head tilted, a phone held at a slant): serving turns a face upright only from there, and
    # the training clips' faces lean little (95% within 10°). 0 = off.
    tilt_prob: float = 0.0
    # Faces leaning this far or further are turned upright before they are cropped, for training
    # and, stored in the checkpoint, when its model serves. 0 turns every face whose eyes are found.
    upright_from_degrees: float = UPRIGHT_FROM_DEGREES
    cached_frames: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    eval_every: int = 100
    val_fraction: float = 0.2
    seed: int = 0
    train_qualities: list[str] = field(default_factory=lambda: ["orig", "crf40_480p"])
    hard_quality: str = "crf40_480p"
    # Further qualities (dataset.QUALITIES) the validation clips are judged at, e.g. crf23_240p for
    # small faces: reported beside the two above, never used to select a step or to calibrate.
    judge_qualities: list[str] = field(default_factory=list)
    device: str | None = None
    workers: int = 2


def cache_crops(config: TrainConfig, clips: list[Clip]) -> None:
    """Crop and cache the faces of `clips` at every quality that training and validation read."""
    qualities = sorted(set(config.train_qualities) | {"orig", config.hard_quality} | set(config.judge_qualities))
    prepare_cache(
        clips, config.cache_dir, qualities, config.cached_frames, config.image_size, config.workers, config.upright_from_degrees
    )


def cached_crops(config: TrainConfig, clip: Clip, quality: str) -> tuple[np.ndarray, np.ndarray]:
    """A clip's crops and landmarks at a quality, cut as `config` crops them (`cache_crops`)."""
    return load_cached(config.cache_dir, clip, quality, config.image_size, config.upright_from_degrees)


def portable_settings(config: TrainConfig) -> dict:
    """The recipe's settings without this machine's folders, so a report can be shared."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("root", "cache_dir", "out", "device", "workers")}
    if config.imagenet_weights:
        settings["imagenet_weights"] = Path(config.imagenet_weights).name
    return settings


class SequenceSampler:
    """Draws training sequences: a third real, a third self-blended from real, a third the data
    set's fakes (half real, half self-blended without them).

    With `paired`, a batch is made of pairs from one identity group, alike in every augmentation:
    a real sequence, and either its self-blended copy or a data set fake of the same people. What
    tells a pair apart is then the manipulation alone, not the person or the scene."""

    def __init__(self, data: dict[str, list[tuple[np.ndarray, np.ndarray]]], clips: list[Clip], config: TrainConfig):
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        components = identity_components(clips)
        self.by_label: dict[str, dict[int, list[str]]] = {"REAL": {}, "FAKE": {}}
        self.fakes_by_method: dict[str, dict[int, list[str]]] = {}
        for clip, comp in zip(clips, components):
            if any(len(c) >= 2 for c, _ in data.get(clip.key, [])):
                self.by_label[clip.label].setdefault(comp, []).append(clip.key)
                if clip.label == "FAKE":
                    self.fakes_by_method.setdefault(clip.method, {}).setdefault(comp, []).append(clip.key)
        self.fake_methods = sorted(self.fakes_by_method)
        self.data = data
        self.regions = BLEND_REGIONS if config.blend_regions else ("face",)

    def _pick(self, label: str, comp: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A window of a random clip with `label`, from group `comp` or a random group (identity-balanced)."""
        groups = self.by_label[label]
        if label == "FAKE" and comp is None and self.config.balance_methods:
            groups = self.fakes_by_method[self.fake_methods[self.rng.integers(len(self.fake_methods))]]
        if comp is None:
            comp = list(groups)[self.rng.integers(len(groups))]
        key = groups[comp][self.rng.integers(len(groups[comp]))]
        versions = [v for v in self.data[key] if len(v[0]) >= 2]
        crops, marks = versions[self.rng.integers(len(versions))]
        length = min(self.config.frames_per_clip, len(crops))
        start = self.rng.integers(0, len(crops) - length + 1)
        return crops[start : start + length], marks[start : start + length]

    def _draw_jitter(self) -> tuple[float, float, float, float]:
        """Scale, shift (x, y) and turn of a sequence's crops; the turn is drawn only when asked
        for, so the default draws stay as they were."""
        scale, dx, dy = self.rng.uniform(0.95, 1.1), *self.rng.uniform(-4, 4, 2)
        angle = 0.0
        if self.config.tilt_prob and self.rng.random() < self.config.tilt_prob:
            angle = float(self.rng.uniform(-UPRIGHT_FROM_DEGREES, UPRIGHT_FROM_DEGREES))
        return scale, dx, dy, angle

    def _jitter(self, image: np.ndarray, scale: float, dx: float, dy: float, angle: float) -> np.ndarray:
        size = image.shape[0]
        warp = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
        warp[:, 2] += np.multiply((dx, dy), pixel_scale(image))
        return cv2.warpAffine(image, warp, (size, size), borderMode=cv2.BORDER_REFLECT)

    def _render(
        self, crops: np.ndarray, marks: np.ndarray, blend: SelfBlend | None, degrade: Degradation, jitter: tuple, glasses: Glasses | None
    ) -> np.ndarray:
        frames = []
        for image, points in zip(crops, marks):
            if blend is not None:
                image = blend.apply(image, points)
            if glasses is not None:  # worn over the face, whether the face is real or not
                image = glasses.apply(image, points)
            frames.append(degrade.apply(self._jitter(image, *jitter), self.rng))
        return np.stack(frames)

    def _draw_glasses(self) -> Glasses | None:
        """Glasses for a share `glasses_prob` of sequences; drawn only when asked for, so the default draws stay as they were."""
        if self.config.glasses_prob and self.rng.random() < self.config.glasses_prob:
            return Glasses.draw(self.rng)
        return None

    def sequence(self) -> tuple[np.ndarray, int]:
        # With every method's fakes excluded, the fakes are self-blended ones only.
        kind = self.rng.integers(3 if self.config.dataset_fakes and self.by_label["FAKE"] else 2)
        crops, marks = self._pick("FAKE" if kind == 2 else "REAL")
        blend = SelfBlend.draw(self.rng, self.regions) if kind == 1 else None
        degrade = Degradation.draw(self.rng, self.config.erase_prob, self.config.grey_prob)
        jitter = self._draw_jitter()
        return self._render(crops, marks, blend, degrade, jitter, self._draw_glasses()), 0 if kind else 1  # class 0 = FAKE

    def pair(self) -> list[tuple[np.ndarray, int]]:
        """A real sequence and a fake one of the same identity group, augmented alike."""
        reals = self.by_label["REAL"]
        comp = list(reals)[self.rng.integers(len(reals))]
        crops, marks = self._pick("REAL", comp)
        degrade = Degradation.draw(self.rng, self.config.erase_prob, self.config.grey_prob)
        jitter = self._draw_jitter()
        glasses = self._draw_glasses()
        real = self._render(crops, marks, None, degrade, jitter, glasses)
        if self.config.dataset_fakes and comp in self.by_label["FAKE"] and self.rng.random() < 0.5:
            fake = self._render(*self._pick("FAKE", comp), None, degrade, jitter, glasses)
        else:
            fake = self._render(crops, marks, SelfBlend.draw(self.rng, self.regions), degrade, jitter, glasses)
        return [(real, 1), (fake, 0)]

    def batch(self) -> tuple[np.ndarray, np.ndarray]:
        """(B, T, H, W, 3) uint8 sequences of equal length, and labels (B,)."""
        if self.config.paired:
            items = [item for _ in range(max(1, self.config.clips_per_batch // 2)) for item in self.pair()]
        else:
            items = [self.sequence() for _ in range(self.config.clips_per_batch)]
        length = min(len(x) for x, _ in items)
        return np.stack([x[:length] for x, _ in items]), np.array([y for _, y in items])


def one_cycle(optimiser: torch.optim.Optimizer, lr: float, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """Learning rate warming up over the first 5% of the steps, then annealed. torch divides by
    zero when that warm-up would end on step 0 (20 steps), so there it lasts two steps."""
    warm_up = 0.05 if round(0.05 * steps, 9) != 1 else 2 / steps
    return torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps, pct_start=warm_up)


def sharpness_aware_gradients(params: list[torch.Tensor], rho: float, loss_at: Callable[[], torch.Tensor]) -> None:
    """Replace the gradients in `params` (from the loss at the current weights) by the gradients at
    the weights moved `rho` along them; the weights are restored. The optimiser then steps as usual.
    The second pass updates the batch-norm running statistics too (by the moved weights' activations)."""
    with torch.no_grad():
        grads = [(p, p.grad) for p in params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for _, g in grads]))
        moves = [(p, g * (rho / (norm + 1e-12))) for p, g in grads]
        for p, move in moves:
            p.add_(move)
    for p in params:
        p.grad = None
    loss_at().backward()
    with torch.no_grad():
        for p, move in moves:
            p.sub_(move)


class WeightAverage:
    """Running mean of a model's weights and batch-norm statistics over the steps it is given.

    The statistics are averaged like the weights rather than measured again for the averaged
    weights: late in training, where the averaging runs, the weights move little."""

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model)
        self.count = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.count += 1
        for mine, theirs in zip(self.model.state_dict().values(), model.state_dict().values()):
            if mine.is_floating_point() and self.count > 1:
                mine.add_((theirs - mine) / self.count)
            else:  # the first, and batch-norm's step counters
                mine.copy_(theirs)


def evenly(crops: np.ndarray, count: int) -> np.ndarray:
    if len(crops) <= count:
        return crops
    return crops[np.linspace(0, len(crops) - 1, count).round().astype(int)]


@torch.inference_mode()
def clip_margins(model: ClipModel, sequences: list[np.ndarray], device: torch.device) -> np.ndarray:
    """Raw logit margin (FAKE − REAL) per clip, on `sequence_length` crops spread as when serving;
    nan for a clip without crops (no face found)."""
    model.eval()
    margins = []
    for crops in sequences:
        if not len(crops):
            margins.append(np.nan)
            continue
        logits, _ = model(to_input(evenly(crops, model.config.sequence_length)[None], model.config, device))
        margins.append(float(logits[0, 0] - logits[0, 1]))
    return np.array(margins)


@dataclass
class Fit:
    """A trained model and what the validation clips said along the way."""

    model: ClipModel
    history: list[dict]  # step, loss and validation AUCs at every evaluation
    margins: dict[int, dict[str, np.ndarray]]  # step → quality → margin per kept validation clip (nan: no face at that quality)
    kept: list[int]  # validation clips with crops at orig and the hard quality (the others have no face)
    kept_step: int
    trained_on: list[Clip]  # the training clips less the excluded methods' fakes


def member_config(config: TrainConfig, member: int) -> TrainConfig:
    """The settings that train member `member` of an ensemble: the same but for the seed."""
    return replace(config, seed=config.seed + member, members=1)


def average_margins(per_member: list[dict[int, dict[str, np.ndarray]]]) -> dict[int, dict[str, np.ndarray]]:
    """An ensemble's margins (step → quality → margin per clip): the mean of its members'."""
    return {
        step: {q: np.mean([m[step][q] for m in per_member], axis=0) for q in by_quality}
        for step, by_quality in per_member[0].items()
    }


def member_history(history: list[dict], member: int, members: int) -> list[dict]:
    """A member's training history, each record marked with the member when there are several."""
    return history if members == 1 else [{"member": member, **record} for record in history]


def learnt_from(clips: list[Clip]) -> dict[str, list[str]]:
    """What a checkpoint records of the clips it learnt from: their file names, and the people
    (source ids) they show where the manifest names them, so an evaluation can tell unseen clips."""
    return {
        "trained_on": [Path(c.path).name for c in clips],
        "trained_on_identities": sorted({i for c in clips if c.group for i in c.identities}),
    }


def training_clips(clips: list[Clip], config: TrainConfig) -> list[Clip]:
    """The clips a model learns from: all but the fakes of `config.exclude_methods`."""
    return [c for c in clips if c.label == "REAL" or c.method not in config.exclude_methods]


def fit(
    config: TrainConfig,
    train_clips: list[Clip],
    val_clips: list[Clip],
    select_best: bool = True,
    before_step: Callable[[int], None] | None = None,
) -> Fit:
    """Train on cached crops; with `select_best`, keep the step that did best on validation, else the last.
    With no validation clips, the history records the training loss alone.

    `before_step(step)`, if given, is called before each step (cross-validation uses it to
    share the cores among the folds that are training)."""
    if select_best and not val_clips:
        raise ValueError("selecting the best step needs validation clips")
    torch.manual_seed(config.seed)
    train_clips = training_clips(train_clips, config)
    excluded = f" (no {', '.join(config.exclude_methods)} fakes)" if config.exclude_methods else ""
    log.info("training on %d clips%s", len(train_clips), excluded)
    device = pick_device(config.device)
    train_data = {c.key: [cached_crops(config, c, q) for q in config.train_qualities] for c in train_clips}
    sampler = SequenceSampler(train_data, train_clips, config)
    scored = ("orig", config.hard_quality)  # the qualities that select the step and calibrate
    val_qualities = dict.fromkeys([*scored, *config.judge_qualities])
    val_sets = {q: [cached_crops(config, c, q)[0] for c in val_clips] for q in val_qualities}
    kept = [i for i in range(len(val_clips)) if all(len(val_sets[q][i]) for q in scored)]
    y_val = np.array([val_clips[i].label == "FAKE" for i in kept])

    net_config = NetworkConfig(encoder=config.encoder, hidden_size=config.hidden_size, image_size=config.image_size)
    if config.upright_from_degrees != UPRIGHT_FROM_DEGREES:  # serving must crop as training did
        net_config.extra["upright_from_degrees"] = config.upright_from_degrees
    model = DeepfakeNet(net_config, config.imagenet_weights).to(device)
    frozen = model.encoder[: config.frozen_blocks]
    frozen.requires_grad_(False)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    schedule = one_cycle(optimiser, config.lr, config.steps)
    loss_fn = nn.CrossEntropyLoss()
    best: dict = {"score": -np.inf}
    history, margins_by_step = [], {}
    average = WeightAverage(model) if config.average_from else None
    started = time.time()
    for step in range(1, config.steps + 1):
        if before_step:
            before_step(step)
        model.train()
        frozen.eval()  # keep the ImageNet batch-norm statistics of the frozen blocks
        if config.freeze_batchnorm:
            model.encoder.apply(lambda m: m.eval() if isinstance(m, nn.BatchNorm2d) else None)
        frames, labels = sampler.batch()
        x, y = to_input(frames, net_config, device), torch.from_numpy(labels).to(device)

        def batch_loss() -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                video_logits, frame_logits = model(x)
                return loss_fn(video_logits.float(), y) + 0.5 * loss_fn(
                    frame_logits.flatten(0, 1).float(), y.repeat_interleave(frame_logits.shape[1])
                )

        optimiser.zero_grad(set_to_none=True)
        loss = batch_loss()
        loss.backward()
        if config.sam_rho:
            sharpness_aware_gradients(trainable, config.sam_rho, batch_loss)
        optimiser.step()
        schedule.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}")
        if average and step >= config.average_from:
            average.update(model)
        if step % config.eval_every == 0 or step == config.steps:
            record = {"step": step, "loss": round(loss.item(), 4)}
            judged = average.model if average and average.count else model
            if kept:
                margins = {q: clip_margins(judged, [v[i] for i in kept], device) for q, v in val_sets.items()}
                margins_by_step[step] = margins
                hard = margins[config.hard_quality]
                record["hard_auc"] = roc_auc(y_val, hard)
                record["orig_auc"] = roc_auc(y_val, margins["orig"])
                record["hard_log_loss"] = log_loss(y_val, 1 / (1 + np.exp(-hard)))
                score = record["hard_auc"] + 0.5 * record["orig_auc"]
                if select_best and score > best["score"]:
                    best = {"score": score, "step": step, "state": {k: v.detach().clone() for k, v in judged.state_dict().items()}}
            record["seconds"] = round(time.time() - started, 1)
            history.append(record)
            log.info("step %d: %s", step, record)
    if average and average.count:
        model = average.model
    if select_best:
        model.load_state_dict(best["state"])
    return Fit(model, history, margins_by_step, kept, best["step"] if select_best else config.steps, train_clips)


def fit_members(config: TrainConfig, train_clips: list[Clip], val_clips: list[Clip]) -> Fit:
    """`config.members` networks, each with its own seed and its last step kept, as one model
    (an EnsembleNet when there are several); its validation margins are the members' mean."""
    fits = [fit(member_config(config, i), train_clips, val_clips, select_best=False) for i in range(config.members)]
    if len(fits) == 1:
        return fits[0]
    return Fit(
        EnsembleNet.of([f.model for f in fits]),
        [r for i, f in enumerate(fits) for r in member_history(f.history, i, config.members)],
        average_margins([f.margins for f in fits]),
        fits[0].kept,
        config.steps,
        fits[0].trained_on,
    )


def train(config: TrainConfig) -> dict:
    """Train, early-stop on the hard validation, calibrate, and save the checkpoint; returns the record."""
    if config.members > 1:
        raise ValueError("an ensemble keeps its last step and is calibrated on a cross-validation: give it a cross-validation report")
    clips = read_manifest(config.manifest, config.root)
    train_clips, val_clips = split_by_identity(clips, config.val_fraction, config.seed)
    log.info("%d clips: %d train, %d validation (identity-disjoint)", len(clips), len(train_clips), len(val_clips))
    cache_crops(config, clips)

    result = fit(config, train_clips, val_clips)
    margins = result.margins[result.kept_step]
    y_val = np.array([val_clips[i].label == "FAKE" for i in result.kept])
    calibration = fit_calibration_on_qualities([margins["orig"], margins[config.hard_quality]], y_val)
    return save_trained(config, result, calibration, validation_clips=[shown_path(c, config.manifest, config.root) for c in val_clips])


def save_trained(
    config: TrainConfig, result: Fit, calibration: tuple[float, float], validation: dict | None = None, **record
) -> dict:
    """Store the calibration in the model and save the checkpoint; returns the training record
    (clips named as in the manifest and settings without this machine's folders, so it can be shared).

    The checkpoint lists the clips and the people (source ids) it learnt from, so an evaluation
    can tell which of its clips are not unseen, and carries `validation` (headline figures on
    unseen people) when there is one to state."""
    model, (temperature, bias) = result.model, calibration
    stated = {"validation": validation} if validation else {}
    model.config.calibrate(temperature, bias)
    record = {
        "train_config": portable_settings(config),
        "best_step": result.kept_step,
        "history": result.history,
        "train_clips": [shown_path(c, config.manifest, config.root) for c in result.trained_on],
        **record,
        "calibration": {"temperature": temperature, "logit_bias": bias},
        **stated,
    }
    Path(config.out).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        model.cpu(), config.out, **learnt_from(result.trained_on), best_step=result.kept_step, **stated,
    )
    log.info("saved %s (step %d kept, T=%.3f, b=%.3f)", config.out, result.kept_step, temperature, bias)
    return record
