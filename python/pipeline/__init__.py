"""A pipeline's frozen preprocessing, cached datasets and models, in Python.

Built from the same Rust code as the ``pipeline`` command, so what it gives is bit for bit
what ``pipeline predict`` and training see::

    import pipeline
    p = pipeline.open("pipelines/cats_dogs.yaml")
    x = p.transform(["new/cat.jpg", "new/dog.png"])     # float32, (2, H, W, 3)
    train = p.dataset(partition="train")                 # a torch-style dataset
    print(p.predict(["new/cat.jpg"]))

Errors are ``pipeline.PipelineError`` with the CLI's message.
"""

import json
import os
import threading

import numpy as np

from ._native import PipelineError
from ._native import Project as _Project

__all__ = ["open", "Pipeline", "Dataset", "PipelineError"]


def open(file, set=(), cache=None):  # noqa: A001 - the package's entry point reads as `pipeline.open`
    """Loads the pipeline file ``file`` as ``pipeline run`` does.

    ``set`` takes ``--set`` overrides (``["train.epochs=3"]``); ``cache`` a cache folder or
    a shared cache's URL, as ``--cache`` does. Nothing is built: a method that needs a stage
    built says so.
    """
    return Pipeline(_Project(os.fspath(file), list(set), cache))


def _is_one(images):
    """Whether ``images`` is one image rather than a batch of them."""
    if isinstance(images, (str, bytes, bytearray, os.PathLike)):
        return True
    if isinstance(images, np.ndarray):
        return images.ndim in (2, 3)
    return type(images).__module__.startswith("PIL.")


def _item(image, k):
    """One image as the native layer takes it: a path, encoded bytes, or decoded pixels."""
    if isinstance(image, (str, bytes, bytearray, os.PathLike)):
        return image
    if isinstance(image, memoryview):
        return bytes(image)
    if type(image).__module__.startswith("PIL."):
        rgb = image.convert("RGB")
        return (rgb.tobytes(), rgb.width, rgb.height)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image {k}: a NumPy image must be uint8 (HxWx3 RGB or HxW gray), got {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise TypeError(
                f"image {k}: a NumPy image is HxWx3 RGB or HxW gray, got shape {image.shape}"
                " (drop an alpha channel as your decoder would)"
            )
        h, w = image.shape[:2]
        return (np.ascontiguousarray(image).tobytes(), w, h)
    return image  # the native layer names what it cannot take


def _batch(images):
    """Whether ``images`` is one image, and the batch as the native layer takes it."""
    one = _is_one(images)
    return one, [_item(image, k) for k, image in enumerate([images] if one else images)]


def _array(buffer, dtype, shape):
    """A NumPy array over ``buffer``'s memory, without a copy."""
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


class Pipeline:
    """A pipeline file, loaded. See :func:`open`."""

    def __init__(self, project):
        self._project = project
        self._frozen = {}
        self._predictors = {}
        self._lock = threading.Lock()

    @property
    def stages(self):
        """``[(name, kind)]`` of every stage, in file order."""
        return self._project.stages()

    def fingerprints(self):
        """``{stage: fingerprint}`` for the pipeline as it is now, built or not."""
        return dict(self._project.fingerprints())

    def lineage(self, stage):
        """The stages that made the dataset ``stage`` is or stands for, each with its params,
        fingerprint and fitted parameters (the stage must be built)."""
        return json.loads(self._project.lineage(stage))

    def _frozen_of(self, stage):
        with self._lock:
            if stage not in self._frozen:
                self._frozen[stage] = self._project.frozen(stage)
            return self._frozen[stage]

    def transform(self, images, stage=None):
        """The values of ``images`` after pixel stage ``stage`` (by default the data the only
        ``train`` stage learns from), bit for bit what training and ``predict`` see.

        ``images`` is one image or a list of them: paths, encoded bytes (JPEG, PNG), ``PIL``
        images or ``uint8`` NumPy arrays (HxWx3 RGB or HxW gray). Paths and bytes are decoded
        by the pipeline's own decoder; ``PIL`` images and arrays are already decoded by
        another one, so their pixels can differ from the file's. Returns ``float32`` of shape
        ``(N, H, W, 3)``, or ``(H, W, 3)`` for one image. The batch runs on every core with
        the GIL released.
        """
        one, items = _batch(images)
        frozen = self._frozen_of(stage)
        out = _array(frozen.run(items), np.float32, (len(items), *frozen.shape))
        return out[0] if one else out

    def _predictor_of(self, stage):
        with self._lock:
            if stage not in self._predictors:
                self._predictors[stage] = self._project.predictor(stage)
            return self._predictors[stage]

    def predict_proba(self, images, stage=None):
        """Each image's class probabilities by the model of ``train`` stage ``stage`` (the only
        one by default): ``float32`` of shape ``(N, classes)``, as ``pipeline predict`` gives."""
        one, items = _batch(images)
        predictor = self._predictor_of(stage)
        out = _array(predictor.run(items), np.float32, (len(items), len(predictor.classes)))
        return out[0] if one else out

    def predict(self, images, stage=None):
        """Each image's class, label and probabilities, as ``pipeline predict --json`` gives."""
        one = _is_one(images)
        probs = self.predict_proba([images] if one else images, stage)
        classes = self._predictor_of(stage).classes
        out = [
            {"class": classes[int(np.argmax(p))], "label": int(np.argmax(p)), "probabilities": p}
            for p in probs
        ]
        return out[0] if one else out

    def classes(self, stage=None):
        """The class names of the model of ``train`` stage ``stage``, by label."""
        return list(self._predictor_of(stage).classes)

    def dataset(self, stage=None, partition=None):
        """The cached dataset of pixel stage ``stage`` (by default the data the only ``train``
        stage learns from), memory-mapped; the rows of ``partition`` (``"train"``, ``"val"``,
        ``"test"``) or all. The stage must be built."""
        return Dataset(self._project.dataset(stage, partition))


class Dataset:
    """A stage's cached dataset, memory-mapped, for ``torch.utils.data.DataLoader`` and the like.

    ``dataset[i]`` is ``(pixels, label)``. A stage that stores its pixels (``resize``) gives
    ``uint8`` arrays over the mapped file itself, with no copy; a view (``mean_subtract``,
    ``normalize``) gives ``float32`` values made from the stored pixels, as training makes
    them, one row at a time. Pages read are dropped from the process as it goes, so memory
    stays within a batch whatever the dataset's size.
    """

    def __init__(self, native):
        self._native = native
        self.shape = native.shape
        self.zero_copy = native.zero_copy
        self.dtype = np.dtype(np.uint8 if native.zero_copy else np.float32)
        self.labels = np.asarray(native.labels, dtype=np.int64)
        self.classes = native.classes
        self.stage = native.stage

    @property
    def ids(self):
        """Each row's ``id`` (its file's SHA-256)."""
        return self._native.ids

    @property
    def paths(self):
        """Each row's file, relative to the ingested folder."""
        return self._native.paths

    def __len__(self):
        return len(self._native)

    def _index(self, i):
        n = len(self._native)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} is out of range: the dataset has {n} rows")
        return i

    def _pixels(self, i):
        if self.zero_copy:
            return _array(self._native.row(i), np.uint8, self.shape)
        return _array(self._native.values([i]), np.float32, self.shape)

    def __getitem__(self, i):
        i = self._index(i)
        return self._pixels(i), int(self.labels[i])

    def __getitems__(self, indices):
        """A batch at once (``DataLoader`` calls it): views for stored pixels, else the rows
        made together on every core."""
        ks = [self._index(i) for i in indices]
        if self.zero_copy:
            return [(self._pixels(i), int(self.labels[i])) for i in ks]
        values = _array(self._native.values(ks), np.float32, (len(ks), *self.shape))
        return [(values[j], int(self.labels[i])) for j, i in enumerate(ks)]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def values(self, indices=None):
        """``float32`` values of rows ``indices`` (all by default), ``(N, H, W, 3)``: what
        training reads, made on every core."""
        ks = range(len(self)) if indices is None else [self._index(i) for i in indices]
        ks = list(ks)
        return _array(self._native.values(ks), np.float32, (len(ks), *self.shape))

    def release_pages(self):
        """Drops the mapped pages read so far from the process (they stay in the page cache)."""
        self._native.release_pages()
