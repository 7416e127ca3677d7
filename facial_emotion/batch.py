"""Running the pipeline over many files for the command line: results streamed to the writers,
a progress bar, Ctrl-C and SIGTERM that stop after the result in hand, and the live webcam."""

import sys

from facial_emotion.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, StopSignals, UserError
from facial_emotion.plots import save_plot
from facial_emotion.video import open_camera, read_frames
from facial_emotion.writers import Annotator, get_writers, print_error, print_note

# The progress bar shows for more files than this; a few files need none.
PROGRESS_BAR_FILES = 20


class Progress:
    """How far a run has got: moves the progress bar, and says where an interrupted run stopped.

    A file or frame counts once its result is recorded, after it was written; the video loop
    says when a video starts and when it is finished.
    """

    def __init__(self, total_files, bar=None):
        self.total_files, self.bar = total_files, bar
        self.files_done = 0
        self.video, self.frames_done, self.frames_total = None, 0, 0

    def start_video(self, path, frames_total):
        self.video, self.frames_done, self.frames_total = path, 0, frames_total

    def record(self, result):
        if result.frame is not None:
            self.frames_done = result.frame + 1
        else:  # an image, or a video that could not be read
            self.file_done()

    def file_done(self):
        self.files_done += 1
        self.video = None
        if self.bar is not None:
            self.bar.update(1)

    def describe(self):
        if self.video is None:
            return f"{self.files_done} of {self.total_files} files"
        total = f" of {self.frames_total}" if self.frames_total else ""
        where = f" (file {self.files_done + 1} of {self.total_files})" if self.total_files > 1 else ""
        return f"{self.frames_done}{total} frames of {self.video}{where}"


def predict_files(pipeline, inputs, top_k=1, as_json=False, csv_path=None, plot_path=None, annotate_dir=None,
                  every=1):
    """Predict every input, streaming each result to the writers; returns the exit status: 0,
    EXIT_USER_ERROR if any file failed, EXIT_INTERRUPTED after Ctrl-C or SIGTERM."""
    from tqdm import tqdm

    outputs = get_writers(pipeline.class_names, top_k, as_json, csv_path)
    annotator = Annotator(annotate_dir) if annotate_dir is not None else None
    keep = plot_path is not None
    bar = tqdm(total=len(inputs), unit="file", disable=None if len(inputs) > PROGRESS_BAR_FILES else True,
               file=sys.stderr, leave=False)
    progress = Progress(len(inputs), bar)
    results, kept = pipeline.inputs(inputs, every, annotator, progress), []
    reader_gone_early = False
    with StopSignals() as stop:
        try:
            for result in results:
                outputs.add(result)
                progress.record(result)
                if keep:
                    kept.append(result)
                if stop.requested:
                    break
                if outputs.stdout.gone and csv_path is None and plot_path is None and annotate_dir is None:
                    reader_gone_early = outputs.stdout.problem is None
                    break
        except KeyboardInterrupt:  # a second Ctrl-C: stop now; the result in hand is lost
            stop.requested = True
        finally:
            results.close()  # releases an open video and finishes its annotated copy
            bar.close()
            outputs.close()
        plot_failed = False
        if plot_path is not None and kept:
            try:
                save_plot(kept, pipeline.class_names, plot_path)
            except UserError as error:
                print_error(error)
                plot_failed = True
    if stop.requested:
        saved = f"; results so far are in {csv_path}" if csv_path is not None else ""
        print_note(f"interrupted after {progress.describe()}{saved}")
        return EXIT_INTERRUPTED
    if reader_gone_early:
        return 0
    return EXIT_USER_ERROR if outputs.failures or plot_failed or outputs.stdout.problem else 0


def run_webcam(pipeline, index=0):
    """Live emotions from a camera in a window, q to quit. Shares Pipeline.frames with videos."""
    import cv2

    capture = open_camera(index)
    try:
        for _, rgb, faces in pipeline.frames(read_frames(capture)):
            try:
                cv2.imshow("emotions (q to quit)", Annotator.draw_bgr(rgb, faces))
                key = cv2.waitKey(1) & 0xFF
            except cv2.error:
                raise UserError("--webcam needs an OpenCV build with windows: pip install opencv-python<5 "
                                "(the headless build this project installs has none)") from None
            if key == ord("q"):
                break
    finally:
        capture.release()
        try:
            cv2.destroyAllWindows()
        except cv2.error:  # a build without windows (opencv-python-headless) never opened one
            pass
