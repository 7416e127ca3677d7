"""Running the pipeline over many files for the command line: results streamed to the sinks of
the outputs asked for, Ctrl-C and SIGTERM that stop after the result in hand, and the live webcam."""

from facial_emotion.annotation import bgr_with_faces
from facial_emotion.console import StopSignals
from facial_emotion.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError, print_note
from facial_emotion.outputs import Outputs
from facial_emotion.video import open_camera, read_frames

def predict_files(pipeline, inputs, chosen, top_k=1, every=1):
    """Predict every input, streaming each result to the sinks of the outputs `chosen` ({name:
    path or True}, see outputs.OUTPUTS); returns the exit status: 0, EXIT_USER_ERROR if any file
    or output failed, EXIT_INTERRUPTED after Ctrl-C or SIGTERM."""
    outputs = Outputs(chosen, pipeline.class_names, top_k, len(inputs))
    progress, stdout = outputs.progress, outputs.run.stdout
    results = pipeline.inputs(inputs, every, pictures=outputs.pixels)
    reader_gone_early = False
    with StopSignals() as stop:
        try:
            for result in results:
                outputs.add(result)
                if stop.requested:
                    break
                if stdout.gone and outputs.only_stdout:
                    reader_gone_early = stdout.problem is None
                    break
        except KeyboardInterrupt:  # a second Ctrl-C: stop now; the result in hand is lost
            stop.requested = True
        finally:
            results.close()  # releases an open video
            outputs.close()
    if stop.requested:
        saved = f"; results so far are in {', '.join(map(str, outputs.files))}" if outputs.files else ""
        print_note(f"interrupted after {progress.describe()}{saved}")
        return EXIT_INTERRUPTED
    if reader_gone_early:
        return 0
    return EXIT_USER_ERROR if outputs.failures or stdout.problem else 0


def run_webcam(pipeline, index=0):
    """Live emotions from a camera in a window, q to quit. Shares Pipeline.frames with videos."""
    import cv2

    capture = open_camera(index)
    try:
        for _, rgb, faces in pipeline.frames(read_frames(capture)):
            try:
                cv2.imshow("emotions (q to quit)", bgr_with_faces(rgb, faces))
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
