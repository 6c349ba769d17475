"""The training pieces of approximation-aware retraining, plain Keras: a recipe (optimizer,
schedule, distillation), the warm-up + cosine schedule and the distillation loss. The
loop that drives them through the emulation lives in `workflows.retrain`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import keras
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

    @property
    def distills(self) -> bool:
        return self.alpha > 0

    def to_dict(self) -> dict:
        doc = asdict(self)
        if not self.gradient_rank:  # STE: recorded as before the option existed (checkpoints stay valid)
            del doc["gradient_rank"], doc["gradient_halfwidth"]
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
}


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


