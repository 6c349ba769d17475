"""The training pieces of approximation-aware retraining, plain Keras: a recipe (optimizer,
schedule, distillation), the warm-up + cosine schedule and the distillation loss. The
loop that drives them through the emulation lives in `workflows.retrain`."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

BATCH = 128



@dataclass(frozen=True)
class Recipe:
    """One way to retrain a design.

    optimizer: 'adam' or 'sgd' (momentum 0.9, Nesterov). lr: the peak learning rate.
    schedule: 'cosine' (linear warm-up over `warmup_epochs`, then cosine decay to
    `min_lr`) or 'constant'. train_images: a stratified subset of the training split
    (None = all 45,000). alpha, temperature: distillation weight and temperature
    (alpha = 0: cross-entropy only). label_smoothing applies to the cross-entropy part.
    augment: crop/flip augmentation as in `train`; distillation with augmentation computes
    the teacher on the augmented batch (online), without it the teacher's logits come
    from the on-disk cache. gradient_rank > 0: back-propagate through the multipliers'
    tables (their leading `gradient_rank` error components, derivatives over
    +-`gradient_halfwidth` codes; `emulation.table_gradient`) instead of the STE.
    ema > 0: score and keep an exponential moving average of the weights (`WeightAverage`,
    this decay at most) instead of the last step's weights; training goes on from the latter.
    feature_weight > 0: also pull every approximate layer's output towards the all-exact
    twin's output of that layer on the same image (`FeatureMatch`; an online teacher).
    weight_clip > 0: keep each approximate layer's kernel within its starting mean +-
    `weight_clip` standard deviations (`ClipRange`), from the first step on.
    """

    name: str
    optimizer: str = "adam"
    lr: float = 1e-3
    epochs: int = 4
    warmup_epochs: float = 0.5
    schedule: str = "cosine"
    min_lr: float = 0.0
    train_images: int | None = None
    alpha: float = 0.9
    temperature: float = 4.0
    label_smoothing: float = 0.0
    augment: bool = False
    batch_size: int = BATCH
    gradient_rank: int = 0
    gradient_halfwidth: int = 4
    ema: float = 0.0
    feature_weight: float = 0.0
    weight_clip: float = 0.0

    def __post_init__(self):
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer: expected 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule: expected 'cosine' or 'constant', got {self.schedule!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha: must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {self.temperature}")
        if self.gradient_rank < 0 or self.gradient_halfwidth < 1:
            raise ValueError(f"gradient_rank must be >= 0 and gradient_halfwidth >= 1, got {self.gradient_rank}, "
                             f"{self.gradient_halfwidth}")
        if self.feature_weight < 0:
            raise ValueError(f"feature_weight: must be >= 0, got {self.feature_weight}")
        if self.weight_clip < 0:
            raise ValueError(f"weight_clip: must be >= 0 (0 = off), got {self.weight_clip}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema: must be in [0, 1), got {self.ema}")

    @property
    def distills(self) -> bool:
        return self.alpha > 0

    @property
    def online_teacher(self) -> bool:
        """The teacher runs next to the student on each batch (augmented images, or its
        inner layers' outputs wanted) instead of from cached logits."""
        return self.feature_weight > 0 or (self.distills and self.augment)

    def to_dict(self) -> dict:
        doc = asdict(self)
        if not self.gradient_rank:  # STE: recorded as before the option existed (checkpoints stay valid)
            del doc["gradient_rank"], doc["gradient_halfwidth"]
        for optional in ("ema", "feature_weight", "weight_clip"):
            if not doc[optional]:
                del doc[optional]
        return doc


# The recipes of the comparison in experiments/finetune/recipes/.
RECIPES = {
    # today's `finetune`: cross-entropy with label smoothing, Adam 1e-4, constant, crop/flip
    "ce-adam1e-4": Recipe("ce-adam1e-4", "adam", 1e-4, schedule="constant", warmup_epochs=0, alpha=0.0,
                          label_smoothing=0.1, augment=True),
    "kd-adam1e-3-cos": Recipe("kd-adam1e-3-cos", "adam", 1e-3),
    "kd-sgd2e-2-cos": Recipe("kd-sgd2e-2-cos", "sgd", 2e-2),
    # the chosen recipe with crop/flip and an online all-exact teacher on each augmented batch
    "kd-aug-adam1e-3-cos": Recipe("kd-aug-adam1e-3-cos", "adam", 1e-3, augment=True),
    # the chosen recipe at a third of the peak rate (mild designs dip at 1e-3)
    "kd-adam3e-4-cos": Recipe("kd-adam3e-4-cos", "adam", 3e-4),
    # the chosen recipe with the tables' own gradient (8 leading error components) instead of the STE
    "kd-tg8-adam1e-3-cos": Recipe("kd-tg8-adam1e-3-cos", "adam", 1e-3, gradient_rank=8),
    # the chosen recipe, scoring and keeping a moving average of the weights (Polyak averaging)
    "kd-ema-adam1e-3-cos": Recipe("kd-ema-adam1e-3-cos", "adam", 1e-3, ema=0.999),
    # the chosen recipe plus layer-wise distillation: each approximate layer's output pulled
    # towards the all-exact twin's (weight 1 = as much as the mean normalised error of a layer)
    "kd-feat-adam1e-3-cos": Recipe("kd-feat-adam1e-3-cos", "adam", 1e-3, feature_weight=1.0),
    # the chosen recipe with each approximate kernel kept within 4 (3) standard deviations of its mean
    "kd-clip4-adam1e-3-cos": Recipe("kd-clip4-adam1e-3-cos", "adam", 1e-3, weight_clip=4.0),
    "kd-clip3-adam1e-3-cos": Recipe("kd-clip3-adam1e-3-cos", "adam", 1e-3, weight_clip=3.0),
    # the same at a third of the peak rate: near-exact designs lose less in their first epoch
    "kd-clip3-adam3e-4-cos": Recipe("kd-clip3-adam3e-4-cos", "adam", 3e-4, weight_clip=3.0),
}


@keras.saving.register_keras_serializable(package="surrogate_nas")
class ClipRange(keras.constraints.Constraint):
    """Keeps a kernel within [low, high].

    The emulation quantizes a kernel over its own min..max (tf-approximate's per-tensor
    range), and a circuit's error is fixed in code units. A kernel's extremes are a few
    outliers (5.8-6.2 standard deviations from the mean in the shipped AlexNet's conv2-5),
    so most weights use a narrow band of codes and the error is large next to their products.
    Clipping the outliers spreads the codes: at 4 standard deviations the all-exact AlexNet
    loses 0.05 pp on the search set and the 45.9 % design q45 gains 6.7 pp before retraining;
    retraining then learns around the clipped range. Keras applies it after every step."""

    def __init__(self, low: float, high: float):
        self.low, self.high = float(low), float(high)

    @classmethod
    def around(cls, kernel, n_std: float) -> "ClipRange":
        """mean +- n_std standard deviations of `kernel`."""
        kernel = np.asarray(kernel, np.float64)
        mean, std = float(kernel.mean()), float(kernel.std())
        return cls(mean - n_std * std, mean + n_std * std)

    def __call__(self, w):
        return keras.ops.clip(w, self.low, self.high)

    def get_config(self):
        return {"low": self.low, "high": self.high}


class WeightAverage(keras.callbacks.Callback):
    """An exponential moving average of `variables`, updated after every training step.

    At a peak rate of 1e-3 every step moves the weights by noise as much as by signal (the
    all-exact twin retrained by the chosen recipe ends 0.3-0.45 pp below its start); the
    average of the last steps sits nearer the minimum. The decay warms up as in TF's
    `ExponentialMovingAverage(num_updates=t)`: min(decay, (1 + t) / (10 + t)) at update t,
    so the un-tuned start is forgotten within tens of steps. `state` (the averages and t)
    is what a checkpoint must hold for a resumed run to average as an uninterrupted one."""

    def __init__(self, variables, decay: float):
        super().__init__()
        self.variables = list(variables)
        self.decay = float(decay)
        self.averages = [tf.Variable(np.asarray(v), trainable=False) for v in self.variables]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False)

    @property
    def state(self) -> list:
        return [*self.averages, self.updates]

    @tf.function(autograph=False)  # a plain loop over the variables; no source parsing at trace time
    def _update(self):
        t = tf.cast(self.updates, tf.float32)
        d = tf.minimum(self.decay, (1.0 + t) / (10.0 + t))
        for a, v in zip(self.averages, self.variables):
            a.assign(d * a + (1.0 - d) * tf.convert_to_tensor(v))
        self.updates.assign_add(1)

    def on_train_batch_end(self, batch, logs=None):
        self._update()

    @contextmanager
    def swapped_in(self):
        """The variables hold the averages inside the block, their own values after it."""
        raw = [np.asarray(v) for v in self.variables]
        for v, a in zip(self.variables, self.averages):
            v.assign(a)
        try:
            yield
        finally:
            for v, r in zip(self.variables, raw):
                v.assign(r)


@keras.saving.register_keras_serializable(package="surrogate_nas")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = peak * (step + 1) / warmup for step < warmup (linear warm-up), then
    min_lr + (peak - min_lr) * (1 + cos(pi * p)) / 2 with p = (step - warmup) / (total - warmup)
    clipped to [0, 1] (cosine decay to min_lr at the last step). warmup = 0: no warm-up."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0):
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_lr = float(min_lr)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = float(self.warmup_steps)
        up = self.peak * (step + 1.0) / max(1.0, warm)
        progress = tf.clip_by_value((step - warm) / max(1.0, float(self.total_steps) - warm), 0.0, 1.0)
        down = self.min_lr + (self.peak - self.min_lr) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < warm, up, down)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "min_lr": self.min_lr}


def make_optimizer(recipe: Recipe, steps_per_epoch: int):
    if recipe.schedule == "cosine":
        lr = WarmupCosine(recipe.lr, steps_per_epoch * recipe.epochs, int(round(recipe.warmup_epochs * steps_per_epoch)),
                          recipe.min_lr)
    else:
        lr = recipe.lr
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    return keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True)


# ------------------------------------------------------------------ loss


@keras.saving.register_keras_serializable(package="surrogate_nas")
class FeatureMatch(keras.layers.Layer):
    """Adds weight * mean over layers of |s - t|^2 / var(t) to the model's losses and passes
    its first input through. Called as FeatureMatch(w)([out, s1, t1, s2, t2, ...]): s the
    student's output of an approximate layer, t the all-exact twin's output of the same layer
    (no gradient), var(t) over the batch and all positions: a layer's term is its relative
    error power, so layers of any scale weigh alike."""

    def __init__(self, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, inputs):
        out, pairs = inputs[0], inputs[1:]
        terms = []
        for s, t in zip(pairs[0::2], pairs[1::2]):
            t = tf.stop_gradient(t)
            terms.append(tf.reduce_mean(tf.square(s - t)) / (tf.math.reduce_variance(t) + 1e-12))
        self.add_loss(self.weight * tf.add_n(terms) / len(terms))
        return out

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


@keras.saving.register_keras_serializable(package="surrogate_nas")
class DistillationLoss(keras.losses.Loss):
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(y, s).

    y_true: one-hot labels (n_classes columns). y_pred: the student's logits, followed
    by the teacher's logits when alpha > 0 (2 * n_classes columns)."""

    def __init__(self, n_classes: int, alpha: float = 0.9, temperature: float = 4.0, label_smoothing: float = 0.0,
                 name: str = "distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.n_classes = int(n_classes)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        c = self.n_classes
        student = y_pred[:, :c]
        y = tf.cast(y_true, tf.float32)
        if self.label_smoothing:
            y = y * (1.0 - self.label_smoothing) + self.label_smoothing / c
        ce = -tf.reduce_sum(y * tf.nn.log_softmax(student, axis=-1), axis=-1)
        if self.alpha == 0:
            return ce
        t = self.temperature
        teacher = tf.stop_gradient(y_pred[:, c:2 * c])
        log_pt = tf.nn.log_softmax(teacher / t, axis=-1)
        log_ps = tf.nn.log_softmax(student / t, axis=-1)
        kl = tf.reduce_sum(tf.exp(log_pt) * (log_pt - log_ps), axis=-1)
        return self.alpha * t * t * kl + (1.0 - self.alpha) * ce

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes, "alpha": self.alpha,
                "temperature": self.temperature, "label_smoothing": self.label_smoothing}


