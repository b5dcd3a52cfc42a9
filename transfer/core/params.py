"""params.yaml: each key declared once, here, with its type, bounds and meaning; checked before any stage works.

`load()` validates the whole file; a typo, a wrong type or a value out of range stops the stage with a message
that names the key, the value and what is allowed, and an unknown key suggests the nearest known one. Each field's
`description` is both the "must be ..." of its error message and its line in docs/params.md
(`python -m tools.params_doc` prints that table; a test keeps the two equal).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from transfer.core import params_file
from transfer.core import params_messages as messages
from transfer.core.errors import StageError
from transfer.core.redact import credentials_in

# features.backbone's choices: the keras.applications class each names and its input preprocessing ("caffe": RGB to
# BGR minus the ImageNet mean; "tf": scaled to [-1, 1]; "none": built into the model).
# transfer/features/backbones.py builds them from this table.
BACKBONES = {
    "resnet50": ("ResNet50", "caffe"),
    "resnet101": ("ResNet101", "caffe"),
    "resnet50v2": ("ResNet50V2", "tf"),
    "efficientnetv2b0": ("EfficientNetV2B0", "none"),
    "mobilenetv3large": ("MobileNetV3Large", "none"),
    "convnexttiny": ("ConvNeXtTiny", "none"),
}
if TYPE_CHECKING:  # a Literal built at run time is opaque to a type checker
    Backbone = str
else:
    Backbone = Literal[tuple(BACKBONES)]
Backend = Literal["tensorflow", "jax", "torch"]  # Keras backends the features stage can run on
BACKENDS = get_args(Backend)
# NumPy (scikit-learn's split, Keras' seeding) takes seeds in [0, 2**32 - 1] only.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]

# What this run loaded (the path as named, the file it named then, its values) and the keys it has read since:
# transfer.core.cli.run checks those against params.yaml at the end, since DVC records params.yaml as it is after
# the stage exits.
_loaded: tuple[Path, Path, dict] | None = None
WHY_THIS_STAGE = "every stage checks all of params.yaml before any work, so whichever stage runs first reports it"
_read: set[str] = set()


class Section(BaseModel):
    """A params section: strict types (YAML's 5.0 is no integer, "0.2" no number), no unknown keys, and every
    field read (`config.epochs`) recorded for check_unchanged()."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    section: ClassVar[str] = ""

    def __getattribute__(self, name: str) -> Any:
        cls = type(self)
        if name in cls.model_fields:
            _read.add(f"{cls.section}.{name}")
        return super().__getattribute__(name)


class DataParams(Section):
    section: ClassVar[str] = "data"
    url: str = Field(
        min_length=1, description="the archive: an http(s):// URL, a file:// URL or a path (`~` expands); zip or tar"
    )
    md5: str | None = Field(
        pattern="^[0-9a-f]{32}$", description="the archive's md5 (32 hex digits), or null to skip the check"
    )
    exclude: tuple[str, ...] = Field(
        description="class folders to drop after extraction, e.g. [BACKGROUND_Google], or []; NFC or NFD names match"
    )

    @field_validator("url", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        # dvc.lock, which is committed, records params.yaml's values: a credential here would end up in git.
        if what := credentials_in(value):  # (raises for a URL that does not parse: named as it is)
            where = (
                "~/.netrc (machine HOST login USER password ...)"
                if "user info" in what
                else "DATA_TOKEN or DATA_HEADER"
            )
            raise ValueError(f"carries {what}, which dvc.lock would record in git; give it through {where} instead")
        return value

    @field_validator("md5", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("exclude", mode="before")
    @classmethod
    def _folder_names(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, list) and any(isinstance(v, bool) for v in value):
            raise ValueError(
                "must be a list of folder names; YAML reads unquoted true and false as booleans, so quote such "
                "names (e.g. ['true'])"
            )
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError("must be a list of folder names, e.g. [BACKGROUND_Google], or []")
        return tuple(value)


class SplitParams(Section):
    section: ClassVar[str] = "split"
    test: Fraction = Field(description="per class, the share of images held out for the test set (0-1, exclusive)")
    val: Fraction = Field(description="per class, the share of the rest used for validation (0-1, exclusive)")
    seed: Seed = Field(description="seed of the split (0 to 2**32 - 1)")


class FeaturesParams(Section):
    section: ClassVar[str] = "features"
    backbone: Backbone = Field(description="the frozen ImageNet backbone")
    backend: Backend = Field(description="Keras backend of the features stage (uses its GPU when it has one)")
    weights: str | None = Field(description="imagenet, null (random init, for tests) or the path of a weights file")
    image_size: int = Field(
        ge=32, le=65536, description="square input side in pixels (the tutorial's 256), 32 to 65536"
    )
    batch_size: int = Field(ge=1, le=4096, description="images per batch through the backbone, at most 4096")

    @field_validator("weights")
    @classmethod
    def _weights_file(cls, value: str | None) -> str | None:
        if value not in (None, "imagenet") and not Path(value).is_file():
            raise ValueError("is not an existing file (use imagenet, null, or the path of a weights file)")
        return value


class TrainParams(Section):
    section: ClassVar[str] = "train"
    head: Literal["dense", "logistic"] = Field(
        description="the classifier head: the tutorial's dense head, or L2-regularised logistic regression"
    )
    epochs: int = Field(ge=1, le=100_000, description="dense head: passes over the training features")
    batch_size: int = Field(ge=1, le=1_000_000, description="dense head: features per training step")
    learning_rate: Positive = Field(description="dense head: Adam's learning rate")
    hidden_units: int = Field(ge=1, le=1_000_000, description="dense head: width of the hidden layer")
    dropout: float = Field(ge=0, lt=1, description="dense head: rate of both Dropout layers, in [0, 1)")
    logistic_c: Positive = Field(description="logistic head: inverse L2 strength (scikit-learn's C)")
    seed: Seed = Field(description="seed of the head's initialisation and shuffling")


class FinetuneParams(Section):
    section: ClassVar[str] = "finetune"
    epochs: int = Field(
        ge=0, le=100_000, description="fine-tuning passes over the training images; 0: none, the head is delivered"
    )
    learning_rate: Positive = Field(description="Adam's learning rate for the unfrozen layers and the head (1e-5)")
    unfreeze: int = Field(
        ge=0, le=1000, description="top blocks of the backbone trained (0: the head alone); BatchNorm stays frozen"
    )
    batch_size: int = Field(ge=1, le=4096, description="images per training step, at most 4096")
    patience: int = Field(
        ge=1, le=100_000, description="epochs without a lower validation loss before stopping (best epoch kept)"
    )
    seed: Seed = Field(description="seed of the shuffling, the augmentation (flip, crop) and dropout")


class AuditParams(Section):
    section: ClassVar[str] = "audit"
    duplicate_ratio: float = Field(
        gt=0,
        le=1,
        description="near-duplicates: pairs closer than this share of the median nearest-neighbour distance, (0, 1]",
    )
    folds: int = Field(ge=2, le=50, description="label errors: cross-validation folds of the out-of-fold model, 2-50")
    logistic_c: Positive = Field(
        description="label errors: inverse L2 strength of the out-of-fold logistic regression (scikit-learn's C)"
    )
    max_rows: int = Field(ge=1, le=1_000_000, description="rows kept in each audit CSV (the summary counts all)")
    seed: Seed = Field(description="seed of the cross-validation folds")


class Params(BaseModel):
    model_config = ConfigDict(frozen=True)
    data: DataParams
    split: SplitParams
    features: FeaturesParams
    train: TrainParams
    finetune: FinetuneParams
    audit: AuditParams


SECTIONS: dict[str, type[Section]] = {
    name: cast(type[Section], field.annotation) for name, field in Params.model_fields.items()
}


def validate(raw: Any, source: str = "params.yaml") -> Params:
    """Check a parsed params mapping; raise StageError listing every problem at once."""
    if not isinstance(raw, dict):
        raise StageError(f"{source}: expected a mapping with sections {', '.join(SECTIONS)}")
    problems = [messages.unknown(str(key), list(SECTIONS)) for key in raw if key not in SECTIONS]
    sections = {}
    for name, section in SECTIONS.items():
        values = raw.get(name)
        if not isinstance(values, dict):
            problems.append(f"missing section {name}: (keys {', '.join(section.model_fields)})")
            continue
        try:
            sections[name] = section(**{str(k): v for k, v in values.items()})
        except ValidationError as error:
            problems += messages.problems(section, values, error)
    if problems:  # DVC then names the stage that failed: say why it is that one, whatever section the key is in
        raise StageError(f"{source}: " + "; ".join(problems) + f" ({WHY_THIS_STAGE})")
    return Params.model_validate(sections)  # the validated sections, kept as they are


def _read_yaml(path: Path) -> Any:
    return params_file.read(path)


def load(path: str | Path = "params.yaml") -> Params:
    """Read and validate the params file (stages run from the repository root, as DVC runs them)."""
    global _loaded
    path = Path(path)
    raw = _read_yaml(path)
    loaded = validate(raw, str(path))
    _loaded = (path, path.absolute(), raw)
    return loaded


def forget() -> None:
    """Start a run with nothing loaded or read: a second entry point run in the same process (predict from a
    notebook, the tests) must not check the params file an earlier one read, in whatever folder that was."""
    global _loaded
    _loaded = None
    _read.clear()


def _value(raw: Any, key: str) -> Any:
    section, name = key.split(".")
    values = raw.get(section) if isinstance(raw, dict) else None
    return values.get(name, "<missing>") if isinstance(values, dict) else "<missing>"


def check_unchanged() -> None:
    """Fail if params.yaml now holds other values for the keys this stage read than when it loaded them.

    DVC reads params.yaml into dvc.lock only after the stage's command exits, so an edit made while the stage
    ran would otherwise be recorded beside outputs made with the old values, and `dvc status` would say clean.
    Keys the stage did not read may change freely (the next stage reads them when it starts).
    """
    if _loaded is None:
        return
    path, file, before = _loaded
    try:
        now = _read_yaml(file)
    except StageError as error:
        raise StageError(f"{path} changed while the stage ran and can no longer be read ({error})") from None
    changed = sorted(key for key in _read if _value(before, key) != _value(now, key))
    if changed:
        details = ", ".join(
            f"{key} {messages.shown(key, _value(before, key))} -> {messages.shown(key, _value(now, key))}"
            for key in changed
        )
        raise StageError(
            f"{path} changed while the stage ran ({details}); its outputs were made with the old values, so "
            "they are not recorded as up to date: run `dvc repro` again"
        )
