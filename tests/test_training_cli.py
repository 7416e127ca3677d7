"""facial_emotion.training_cli: training's flags, their refusals, the saved settings and the run
state's check, all answered before TensorFlow loads."""

import dataclasses
import sys
from pathlib import Path

import pytest

from facial_emotion import training_cli
from facial_emotion.errors import EXIT_USER_ERROR, UserError
from facial_emotion.training_cli import (MAX_SEED, TRAIN_EXTRA, TrainConfig, check_training_state, config_from_args,
                                         cpu_has_bfloat16, missing_path, mode_of, parse_args)


def refusal(argv, capsys):
    """The one error line argparse prints for `argv` (it exits with status 2)."""
    with pytest.raises(SystemExit) as stopped:
        parse_args(argv)
    assert stopped.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------
# Numbers: each bound accepted, the number past it refused
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--seed", "-1"], f"--seed must be from 0 to {MAX_SEED}"),
    (["--seed", str(MAX_SEED + 1)], f"--seed must be from 0 to {MAX_SEED}"),
    (["--selection-seed", "-1"], f"--selection-seed must be from 0 to {MAX_SEED}"),
    (["--selection-seed", str(MAX_SEED + 1)], f"--selection-seed must be from 0 to {MAX_SEED}"),
    (["--consistency", "-0.5"], "--consistency must be from 0 to 1000"),
    (["--consistency", "1000.5"], "--consistency must be from 0 to 1000"),
    (["--consistency", "nan"], "--consistency must be from 0 to 1000"),
    (["--selection-fraction", "-0.1"], "--selection-fraction must be from 0 to below 0.5"),
    (["--selection-fraction", "0.5"], "--selection-fraction must be from 0 to below 0.5"),
    (["--learning-rate", "0"], "--learning-rate must be a positive number"),
    (["--learning-rate", "inf"], "--learning-rate must be a positive number"),
    (["--learning-rate", "nan"], "--learning-rate must be a positive number"),
    (["--time-limit", "0"], "--time-limit must be a positive number of minutes"),
    (["--time-limit", "inf"], "--time-limit must be a positive number of minutes"),
    (["--time-limit", "nan"], "--time-limit must be a positive number of minutes"),
])
def test_a_number_out_of_range_is_refused_in_one_line(argv, message, capsys):
    assert refusal(argv, capsys).endswith(f"error: {message}")


def test_the_bounds_themselves_are_accepted():
    args = parse_args(["--epochs", "1", "--batch-size", "1", "--seed", str(MAX_SEED), "--selection-seed", "0",
                       "--consistency", "1000", "--selection-fraction", "0.49", "--learning-rate", "1e-9",
                       "--time-limit", "0.5"])
    assert (args.epochs, args.batch_size, args.seed, args.selection_seed) == (1, 1, MAX_SEED, 0)
    assert (args.consistency, args.selection_fraction, args.learning_rate, args.time_limit_minutes) == (
        1000, 0.49, 1e-9, 0.5)
    args = parse_args(["--seed", "0", "--selection-seed", str(MAX_SEED), "--consistency", "0",
                       "--selection-fraction", "0"])
    assert (args.seed, args.selection_seed, args.consistency, args.selection_fraction) == (0, MAX_SEED, 0, 0)
    assert args.time_limit_minutes is None  # no limit unless asked


def test_defaults_are_the_config_s():
    args = parse_args([])
    assert config_from_args(args) == TrainConfig()
    assert mode_of(args) is None


def test_flags_are_not_abbreviated(capsys):
    assert "unrecognized arguments: --epoch" in refusal(["--epoch", "5"], capsys)


# ---------------------------------------------------------------------------------------------
# Flags that go together, and flags that cannot
# ---------------------------------------------------------------------------------------------
def test_evaluate_and_test_dir_need_each_other(capsys):
    assert refusal(["--evaluate", "m.h5"], capsys).endswith("error: --evaluate needs --test-dir")
    assert refusal(["--test-dir", "t"], capsys).endswith("error: --test-dir goes with --evaluate MODEL")
    args = parse_args(["--evaluate", "m.h5", "--test-dir", "t"])
    assert (mode_of(args), args.evaluate, args.test_dir) == ("--evaluate", Path("m.h5"), Path("t"))


@pytest.mark.parametrize("mode_argv, mode", [
    (["--resume", "run"], "--resume"), (["--export-onnx", "m.h5"], "--export-onnx"),
    (["--import-csv", "f.csv", "--data-dir", "d"], "--import-csv"), (["--average", "a.h5", "b.h5"], "--average"),
    (["--evaluate", "m.h5", "--test-dir", "t"], "--evaluate"),
])
def test_each_mode_is_named_and_init_model_is_refused_with_it(mode_argv, mode, capsys):
    assert mode_of(parse_args(mode_argv)) == mode
    assert refusal([*mode_argv, "--init-model", "x.h5"], capsys).endswith(
        f"error: --init-model goes with training, not with {mode}")


def test_modes_exclude_each_other(capsys):
    assert "not allowed with argument" in refusal(["--resume", "run", "--export-onnx", "m.h5"], capsys)


def test_resume_refuses_every_flag_that_would_change_the_run_s_settings(capsys):
    message = refusal(["--resume", "run", "--epochs", "5", "--seed=3", "--dry-run", "--data-dir", "d",
                       "--output-dir", "o"], capsys)
    assert message.endswith("error: --resume continues a run with its own settings; --epochs, --seed, --dry-run, "
                            "--data-dir, --output-dir cannot change them (start a new run with --init-model "
                            "RUN_DIR/last_checkpoint.keras)")
    assert parse_args(["--resume", "run"]).resume == Path("run")


def test_average_refuses_training_flags_but_takes_a_data_dir(capsys):
    assert refusal(["--average", "a.h5", "b.h5", "--epochs", "3", "--seed", "2"], capsys).endswith(
        "error: --average trains nothing: --epochs, --seed would be ignored")
    args = parse_args(["--average", "a.h5", "b.h5", "--data-dir", "d", "--output-dir", "o"])
    assert (args.average, args.data_dir, args.output_dir) == ([Path("a.h5"), Path("b.h5")], Path("d"), Path("o"))


def test_import_csv_needs_a_data_dir_given_explicitly(capsys):
    assert refusal(["--import-csv", "f.csv"], capsys).endswith(
        "error: --import-csv needs --data-dir, the folder to write the class folders into")


def test_flags_given_with_an_equals_sign_count_as_given(capsys):
    assert "--epochs" in refusal(["--resume", "run", "--epochs=2"], capsys)
    assert parse_args(["--import-csv", "f.csv", "--data-dir=d"]).data_dir == Path("d")


def test_flags_are_read_from_sys_argv_when_no_list_is_given(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["emotion_recognition.py", "--epochs", "2", "--resume", "run"])
    with pytest.raises(SystemExit):
        parse_args()
    assert "--resume continues a run with its own settings; --epochs" in capsys.readouterr().err


def test_the_program_is_named_after_the_script_it_runs_from(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/home/me/clone/emotion_recognition.py"])
    parser = training_cli.build_parser()
    assert parser.prog == "emotion_recognition.py"
    assert parser.description == "Train a CNN to recognise facial emotions in 48x48 grayscale faces, or evaluate one."
    monkeypatch.setattr(sys, "argv", ["/usr/bin/facial-emotion-train"])
    assert training_cli.build_parser().prog == "facial-emotion-train"


# ---------------------------------------------------------------------------------------------
# The config the flags ask for
# ---------------------------------------------------------------------------------------------
def test_config_from_args_takes_every_flag_and_keeps_paths_as_text():
    args = parse_args(["--data-dir", "faces", "--epochs", "7", "--batch-size", "16", "--learning-rate", "0.01",
                       "--seed", "9", "--no-augment", "--architecture", "wide", "--class-weight", "balanced",
                       "--time-limit", "30", "--lr-schedule", "cosine", "--init-model", "m.h5", "--optimizer", "sgd",
                       "--precision", "float32", "--consistency", "12", "--selection-fraction", "0.1",
                       "--selection-seed", "4", "--distribute", "mirrored"])
    assert config_from_args(args) == TrainConfig(
        data_dir="faces", epochs=7, batch_size=16, learning_rate=0.01, seed=9, augment=False, architecture="wide",
        class_weighting="balanced", time_limit_minutes=30.0, lr_schedule="cosine", max_batches=None,
        init_model="m.h5", distribute="mirrored", optimizer="sgd", precision="float32", consistency=12.0,
        selection_fraction=0.1, selection_seed=4)


def test_dry_run_is_one_epoch_of_two_batches():
    config = config_from_args(parse_args(["--dry-run", "--epochs", "50", "--seed", "5"]))
    assert (config.epochs, config.max_batches, config.seed) == (1, training_cli.DRY_RUN_BATCHES, 5)
    assert training_cli.DRY_RUN_BATCHES == 2


def test_the_setting_without_a_flag_of_its_own_is_set_by_dry_run(capsys):
    flags = training_cli.TRAINING_FLAGS
    assert flags["max_batches"] == "--dry-run"
    assert flags["epochs"] == "--epochs" and flags["augment"] == "--no-augment"
    assert [field.name for field in dataclasses.fields(TrainConfig) if not field.metadata["flag"]] == ["max_batches"]
    assert "--no-augment" in refusal(["--resume", "run", "--no-augment"], capsys)


# ---------------------------------------------------------------------------------------------
# Saved settings and the run state
# ---------------------------------------------------------------------------------------------
def test_saved_settings_of_other_versions_are_left_out_and_numbers_may_be_integers():
    config = TrainConfig.from_saved({"epochs": 9, "learning_rate": 1, "time_limit_minutes": 20,
                                     "removed_setting": "x"}, "run.json")
    assert (config.epochs, config.learning_rate, config.time_limit_minutes) == (9, 1, 20)
    assert TrainConfig.from_saved({"time_limit_minutes": None, "init_model": None}, "run.json") == TrainConfig()


@pytest.mark.parametrize("saved, message", [
    ([1, 2], "run.json: its settings are not a record"),
    ({"epochs": "9"}, "run.json: setting epochs is '9', not a int"),
    ({"learning_rate": "fast"}, "run.json: setting learning_rate is 'fast', not a float"),
    ({"augment": "yes"}, "run.json: setting augment is 'yes', not a bool"),
    ({"time_limit_minutes": [30]}, "run.json: setting time_limit_minutes is [30]"),
    ({"init_model": {"path": "m"}}, "run.json: setting init_model is {'path': 'm'}"),
])
def test_saved_settings_of_the_wrong_type_are_refused_naming_the_file(saved, message):
    with pytest.raises(UserError) as refused:
        TrainConfig.from_saved(saved, "run.json")
    assert str(refused.value) == message


def valid_state():
    return {"epochs_done": 3, "elapsed_seconds": 12.5, "settings": {},
            "early_stopping": {"wait": 1, "best": 0.5, "best_epoch": 2}, "checkpoint_best": 0.5,
            "reduce_lr": {"wait": 0}}


def test_a_valid_training_state_is_returned_as_it_is():
    state = valid_state()
    assert check_training_state(state, "s.json") is state
    state.update(elapsed_seconds=12, checkpoint_best=None, reduce_lr=None, epochs_done=0)
    state["early_stopping"] = {"wait": 0, "best": None, "best_epoch": None}
    assert check_training_state(state, "s.json") is state


@pytest.mark.parametrize("change, broken", [
    (lambda state: state.pop("epochs_done"), "epochs_done"),
    (lambda state: state.update(epochs_done=True), "epochs_done"),
    (lambda state: state.update(epochs_done=2.0), "epochs_done"),
    (lambda state: state.update(epochs_done=-1), "epochs_done"),
    (lambda state: state.update(elapsed_seconds="12"), "elapsed_seconds"),
    (lambda state: state.update(elapsed_seconds=False), "elapsed_seconds"),
    (lambda state: state.update(early_stopping=[]), "early_stopping"),
    (lambda state: state.update(settings=None), "settings"),
    (lambda state: state["early_stopping"].update(wait="1"), "early_stopping.wait"),
    (lambda state: state["early_stopping"].update(best="0.5"), "early_stopping.best"),
    (lambda state: state["early_stopping"].update(best_epoch=2.5), "early_stopping.best_epoch"),
    (lambda state: state.update(checkpoint_best="0.5"), "checkpoint_best"),
    (lambda state: state.update(reduce_lr=[0]), "reduce_lr"),
])
def test_a_broken_training_state_names_the_broken_field(change, broken):
    state = valid_state()
    change(state)
    with pytest.raises(UserError) as refused:
        check_training_state(state, "s.json")
    assert str(refused.value) == f"s.json: not a valid training state ({broken} missing or of the wrong type)"


def test_a_training_state_that_is_not_a_record_names_every_field():
    with pytest.raises(UserError, match=r"\(epochs_done, elapsed_seconds, early_stopping, settings missing"):
        check_training_state([], "s.json")


# ---------------------------------------------------------------------------------------------
# Before TensorFlow: bfloat16, missing paths, the missing extra
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, native", [
    ("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 sse\n", True),
    ("flags\t\t: fpu amx_bf16 amx_tile\n", True),
    ("flags\t\t: fpu avx512f avx512_vnni\nbugs\t\t: avx512_bf16\n", False),
    ("flags\t\t: fpu avx512_bf16x\n", False),
    ("processor\t: 0\n", False),
])
def test_bfloat16_is_native_only_where_the_flags_line_says_so(tmp_path, text, native):
    (tmp_path / "cpuinfo").write_text(text)
    assert cpu_has_bfloat16(tmp_path / "cpuinfo") is native


def test_a_cpuinfo_with_bytes_that_are_not_text_is_still_read(tmp_path):
    (tmp_path / "cpuinfo").write_bytes(b"model name\t: EPYC \xff\xfe\nflags\t\t: fpu avx512_bf16\n")
    assert cpu_has_bfloat16(tmp_path / "cpuinfo") is True


def test_no_cpuinfo_means_no_bfloat16(tmp_path):
    assert cpu_has_bfloat16(tmp_path / "missing") is False


@pytest.mark.parametrize("argv, missing", [
    (["--data-dir", "{}/nothing"], "{}/nothing: no such data folder"),
    (["--resume", "{}/run"], "{}/run: no such run folder"),
    (["--evaluate", "{}/m.h5", "--test-dir", "{}"], "{}/m.h5: no such model file"),
    (["--evaluate", "{}/here.h5", "--test-dir", "{}/t"], "{}/t: no such folder"),
    (["--export-onnx", "{}/m.h5"], "{}/m.h5: no such model file"),
    (["--import-csv", "{}/f.csv", "--data-dir", "{}"], "{}/f.csv: no such CSV file"),
    (["--average", "{}/here.h5", "{}/b.h5", "--data-dir", "{}"], "{}/b.h5: no such model file"),
    (["--average", "{}/here.h5", "--data-dir", "{}/d"], "{}/d: no such data folder"),
])
def test_a_missing_path_is_named_with_what_it_should_be(tmp_path, argv, missing):
    (tmp_path / "here.h5").write_bytes(b"")
    args = parse_args([arg.format(tmp_path) for arg in argv])
    assert missing_path(args) == missing.format(tmp_path)


def test_no_missing_path_when_everything_is_there(tmp_path):
    (tmp_path / "m.h5").write_bytes(b"")
    assert missing_path(parse_args(["--data-dir", str(tmp_path)])) is None
    assert missing_path(parse_args(["--evaluate", str(tmp_path / "m.h5"), "--test-dir", str(tmp_path)])) is None


def test_main_answers_a_missing_path_before_tensorflow(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "emotion_recognition", None)  # importing it would fail
    assert training_cli.main(["--data-dir", str(tmp_path / "nothing")]) == EXIT_USER_ERROR
    assert capsys.readouterr().err == f"error: {tmp_path / 'nothing'}: no such data folder\n"


def test_main_without_tensorflow_names_the_train_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(training_cli.importlib.util, "find_spec",
                        lambda name: None if name == "tensorflow" else object())
    monkeypatch.setitem(sys.modules, "emotion_recognition", None)
    assert training_cli.main(["--data-dir", str(tmp_path)]) == EXIT_USER_ERROR
    assert capsys.readouterr().err == f"error: {TRAIN_EXTRA}\n"


def test_main_hands_the_parsed_flags_to_the_training_module(tmp_path, monkeypatch):
    handed = []

    class Training:
        @staticmethod
        def run(args):
            handed.append(args)
            return 7

    monkeypatch.setitem(sys.modules, "emotion_recognition", Training)
    assert training_cli.main(["--data-dir", str(tmp_path), "--epochs", "3"]) == 7
    assert handed[0].epochs == 3 and handed[0].data_dir == tmp_path


def test_help_gives_each_setting_s_own_text_and_default(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["emotion_recognition.py"])
    text = " ".join(training_cli.build_parser().format_help().split())
    for field in dataclasses.fields(TrainConfig):
        if field.metadata["flag"]:  # compared without spaces: argparse wraps lines at hyphens too
            assert "".join(field.metadata["help"].split()) in text.replace(" ", ""), field.name
    assert "most epochs (early stopping may end sooner) (default: 60)" in text
    assert "(default: none)" in text and "(default: adam)" in text


# What --help says of the flags that are not settings: the user's only documentation at the shell.
HELP_LINES = {
    "--output-dir OUTPUT_DIR": "where the model, plots and metrics go (default: runs/train, runs/train2, ...)",
    "--overwrite": "allow writing into an --output-dir that holds files",
    "--dry-run": "one epoch of 2 batches: checks that everything runs",
    "--resume RUN_DIR": "continue an interrupted training run from its last finished epoch, with its settings",
    "--evaluate MODEL": "evaluate this saved model on --test-dir",
    "--export-onnx MODEL": "write MODEL's ONNX export beside it (training does this itself), then stop",
    "--average MODEL [MODEL ...]": "one model with the mean of these models' weights (a model and its fine-tunes), "
                                   "finished on --data-dir, into --output-dir",
    "--import-csv CSV": "convert Kaggle's fer2013.csv into class folders under --data-dir, then stop",
    "--test-dir TEST_DIR": "with --evaluate: a folder of class folders",
    "--tta": "with --evaluate: average each face with its mirror image",
}


def test_help_describes_the_modes_and_outputs(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["emotion_recognition.py"])
    text = "".join(training_cli.build_parser().format_help().split())
    for flag, words in HELP_LINES.items():
        assert "".join(f"{flag} {words}".split()) in text, flag


def test_the_mode_and_output_flags_parse_to_their_types():
    args = parse_args(["--output-dir", "o", "--overwrite", "--tta", "--evaluate", "m.h5", "--test-dir", "t"])
    assert (args.output_dir, args.overwrite, args.tta, args.dry_run) == (Path("o"), True, True, False)
    assert parse_args(["--export-onnx", "m.h5"]).export_onnx == Path("m.h5")
    assert parse_args(["--import-csv", "f.csv", "--data-dir", "d"]).import_csv == Path("f.csv")
    assert parse_args(["--resume", "r"]).resume == Path("r") and parse_args(["--dry-run"]).dry_run is True
    defaults = parse_args([])
    assert (defaults.overwrite, defaults.tta, defaults.output_dir, defaults.test_dir) == (False, False, None, None)
    assert (defaults.resume, defaults.evaluate, defaults.export_onnx, defaults.average, defaults.import_csv) == (
        None,) * 5
