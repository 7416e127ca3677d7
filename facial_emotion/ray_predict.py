"""Prediction on Ray Data, for more files than one machine gets through: `predict.py INPUTS --ray
[ADDRESS] --parquet FOLDER`. Needs the ray extra (`pip install "facial-emotion[ray]"`).

The list of input paths becomes a Ray dataset; `map_batches` runs `FilePredictor`, a callable
class, so that each actor loads the model and the face detector once; each file goes through the
same `Pipeline` as the plain path (read, size checks, detect, align, crop, classify) and comes out
as sinks.face_rows, the Parquet sink's rows. A file that fails is an error row, and the job goes
on. Ray writes the rows to a folder of Parquet files as blocks finish. A video is one file, so one
task: its frames are analysed in order by one actor, each face with its person.

Inputs may be local paths or URIs that pyarrow's file systems read (s3://, gs://, hdfs://); an
actor copies a remote file to a temporary local file before reading it.
"""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from facial_emotion.errors import EXIT_USER_ERROR, UserError, first_line, print_error, print_note, require_extra
from facial_emotion.images import is_image_file, is_video_file

# Files per map_batches call (each file goes through the pipeline on its own): enough to make
# Ray's per-call overhead small, few enough that a slow file holds up little.
FILES_PER_BATCH = 8


def is_uri(path):
    return "://" in str(path)


def list_uris(uri, skipped=None):
    """A URI's image and video files: itself, or those under it when it names a folder."""
    from pyarrow import fs

    try:
        filesystem, root = fs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(root)
        if info.type == fs.FileType.Directory:
            infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
            # The URI up to the path pyarrow gives back: s3://bucket/dir -> s3://; hdfs://host:9000/dir -> hdfs://host:9000
            stripped = uri.rstrip("/")
            prefix = stripped[:len(stripped) - len(root.rstrip("/"))] if stripped.endswith(root.rstrip("/")) else ""
            return sorted(prefix + item.path for item in infos if item.type == fs.FileType.File
                          and (is_image_file(item.path) or is_video_file(item.path)))
    except Exception as error:  # pyarrow raises its own types for a bad URI or missing credentials
        raise UserError(f"{uri}: cannot be listed ({first_line(error)})") from None
    if info.type == fs.FileType.NotFound:
        raise UserError(f"{uri}: no such file")
    return [uri]


class FilePredictor:
    """One Ray actor's pipeline: model and detector loaded once, `threads` ONNX Runtime threads
    (Ray sets OMP_NUM_THREADS=1, which ONNX Runtime does not read: its threads are set here)."""

    def __init__(self, model_path, detector="blazeface", runtime="auto", tta=False, every=1, threads=1,
                 no_detect=False):
        from facial_emotion.detection import FaceDetector
        from facial_emotion.pipeline import Classifier, Pipeline
        from facial_emotion.saved_model import load_model
        from facial_emotion.sinks import parquet_schema
        from facial_emotion.tracking import FaceTracker

        model, metadata = load_model(model_path, runtime=runtime, threads=threads)
        self.class_names = list(metadata["class_names"])
        self.schema = parquet_schema(self.class_names)
        self.pipeline = Pipeline(Classifier(model, metadata, tta=tta),
                                 None if no_detect else FaceDetector(detector, threads=threads),
                                 make_tracker=FaceTracker)
        self.every = every

    def __call__(self, batch):
        from facial_emotion.sinks import rows_table

        rows = []
        for path, name in zip(batch["path"].to_pylist(), batch["name"].to_pylist()):
            rows += self.rows_of(path, name)
        return rows_table(rows, self.schema)

    def rows_of(self, path, name):
        """The Parquet rows of one file, read from `path` and named `name` (as the user gave it);
        any failure is the file's error row."""
        from facial_emotion.pipeline import Result
        from facial_emotion.sinks import face_rows

        try:
            with local_copy(path) as local:
                rows = []
                for result in self.pipeline.inputs([local], self.every):
                    result.file = name
                    result.error = result.error and result.error.replace(str(local), name)
                    rows += face_rows(result, self.class_names, faceless=True)
                return rows
        except Exception as error:  # a file must never stop the job: it becomes an error row
            message = str(error) if isinstance(error, UserError) else f"{name}: {first_line(error)}"
            return face_rows(Result(name, error=message), self.class_names, faceless=True)


@contextlib.contextmanager
def local_copy(path):
    """A local path for a file: the path itself, or a temporary copy of a remote URI, removed
    afterwards (also when the download fails)."""
    if not is_uri(path):
        yield path
        return
    from pyarrow import fs

    filesystem, remote = fs.FileSystem.from_uri(path)
    handle, copy = tempfile.mkstemp(suffix=Path(remote).suffix)
    try:
        with os.fdopen(handle, "wb") as local, filesystem.open_input_stream(remote) as stream:
            while chunk := stream.read(1 << 20):
                local.write(chunk)
        yield copy
    finally:
        os.unlink(copy)


def start_ray(address, num_cpus=None):
    """Join the cluster at `address` ("auto", "ray://host:10001"), or start Ray on this machine
    when it is None. Ray's own progress bars stand in for the project's."""
    require_extra("ray", "--ray", "ray")
    import ray

    import logging

    import ray.data

    for name in [*logging.root.manager.loggerDict, "ray.data"]:  # Ray's progress bars say how far it got
        if name.startswith("ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if not ray.is_initialized():
        try:
            ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR")
        except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError for an address
            raise UserError(f"--ray {address or ''}: cannot start or join Ray ({first_line(error)})".replace(
                "--ray :", "--ray:")) from None
    return ray


def predict_on_ray(inputs, parquet_dir, model_path, address=None, actors=None, threads=1, detector="blazeface",
                   runtime="auto", tta=False, every=1, no_detect=False):
    """Predict every input on Ray, writing Parquet files into the new folder `parquet_dir` (into a
    hidden partial folder first, which takes the name when the job is done: the folder appears
    whole or not at all); returns the exit status (EXIT_USER_ERROR when any file failed, after
    all were tried). `actors`: default one per CPU of the cluster, `threads` CPUs each."""
    ray = start_ray(address)
    import pyarrow.compute as pc
    import pyarrow.dataset as pa_dataset

    actors = actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
    dataset = ray.data.from_items([{"path": str(path) if is_uri(path) else os.path.abspath(path), "name": str(path)}
                                   for path in inputs])
    rows = dataset.map_batches(
        FilePredictor, batch_size=FILES_PER_BATCH, batch_format="pyarrow", num_cpus=threads,
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs=dict(model_path=str(model_path), detector=detector, runtime=runtime, tta=tta,
                                   every=every, threads=threads, no_detect=no_detect))
    parquet_dir = Path(parquet_dir)
    partial = tempfile.mkdtemp(dir=parquet_dir.parent, prefix=f".{parquet_dir.name}.", suffix=".partial")
    try:
        rows.write_parquet(str(partial))
        # The error rows only, scanned with a filter: memory follows the errors, not the files.
        errors = pa_dataset.dataset(str(partial), format="parquet").to_table(
            columns=["error"], filter=~pc.field("error").is_null()).column("error").to_pylist()
        os.rename(partial, parquet_dir)
    except Exception as error:  # Ray wraps an actor's failure in its own types, with pages of traceback
        shutil.rmtree(partial, ignore_errors=True)
        raise UserError(f"--ray: the job failed ({first_line(error)})") from None
    except KeyboardInterrupt:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for message in sorted(set(errors)):
        print_error(message)
    print_note(f"{len(inputs)} files; rows in {parquet_dir}")
    return EXIT_USER_ERROR if errors else 0
