"""PyAV decoding of a record's window, and how bad files are skipped, counted and reported."""
import json
import logging
import os

import numpy as np
import pytest

from media_files import broken_set, dominant_frequency, grey, make_mp4, make_wav
from vaemotion_jax.data.media import MediaSpec
from vaemotion_jax.data.decode import (BadExample, DecodeOptions, decode_audio, decode_record, probe,
                                       sample_times)
from vaemotion_jax.data.manifest import ManifestError, Record
from vaemotion_jax.data.pipeline import ExampleFn, PipelineConfig, make_iterator


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return broken_set(str(tmp_path_factory.mktemp("media")))


def frame_index(frames: np.ndarray) -> list[int]:
    """Which source frame each decoded frame is (frames are flat greys, see media_files.grey)."""
    return [int(round((f.mean() - grey(0)) / (grey(1) - grey(0)))) for f in frames]


def test_sample_times_are_slice_centres():
    np.testing.assert_allclose(sample_times(0.0, 2.0, fps=2.0), [0.25, 0.75, 1.25, 1.75])
    np.testing.assert_allclose(sample_times(1.0, 2.0, num_frames=2), [1.25, 1.75])
    assert len(sample_times(0.0, 0.3, fps=2.0)) == 1


def test_frames_at_fps_pick_the_frame_on_screen(files):
    clip = decode_record(Record(id="g", media=files["good"]), DecodeOptions(fps=4.0))
    assert clip.frames.shape == (8, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == 4.0 and (clip.start, clip.end) == (0.0, 2.0)
    # times 0.125, 0.375, ... at 8 fps source -> source frames 1, 3, 5, ...
    assert frame_index(clip.frames) == [1, 3, 5, 7, 9, 11, 13, 15]


def test_fixed_frame_count_over_a_window(files):
    record = Record(id="g", media=files["good"], start=0.5, end=1.5)
    clip = decode_record(record, DecodeOptions(num_frames=2))
    assert frame_index(clip.frames) == [6, 10]  # times 0.75 and 1.25
    assert clip.fps == 2.0
    assert clip.audio.shape == (16000,) and clip.audio.dtype == np.float32


def test_window_after_a_seek_keeps_frames_and_audio_aligned(tmp_path):
    path = make_mp4(str(tmp_path / "gop.mp4"), seconds=2.25, keyframe_every=4, loud_from=1.0)
    clip = decode_record(Record(id="k", media=path, start=1.3, end=2.0), DecodeOptions(num_frames=3))
    assert frame_index(clip.frames) == [11, 13, 15]  # times 1.42, 1.65, 1.88 s at 8 fps
    clip = decode_record(Record(id="k", media=path, start=0.5, end=1.2), DecodeOptions(num_frames=2))
    quiet, loud = np.abs(clip.audio[7700:7950]).max(), np.abs(clip.audio[8050:8300]).max()
    assert clip.audio.shape == (11200,) and quiet == pytest.approx(0.1, abs=0.02) and loud == pytest.approx(0.5, abs=0.05)


def test_audio_resampled_to_16k_mono(tmp_path):
    path = make_mp4(str(tmp_path / "stereo.mp4"), audio_rate=44100, channels=2, tone=440.0)
    audio = decode_audio(path, 0.25, 1.75)
    assert audio.shape == (24000,) and audio.dtype == np.float32
    assert abs(dominant_frequency(audio, 16000) - 440.0) < 2.0
    assert 0.2 < np.abs(audio).max() < 0.4  # stereo averaged to mono keeps the sine's level


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3"])
def test_audio_only_files(tmp_path, ext):
    wav = make_wav(str(tmp_path / f"tone.{ext}"), seconds=1.0, rate=22050, tone=330.0)
    info = probe(wav)
    assert info.has_audio and not info.has_video and info.sample_rate == 22050
    clip = decode_record(Record(id="w", media=wav), DecodeOptions(video=False))
    assert clip.frames is None and clip.audio.shape == (16000,)
    assert abs(dominant_frequency(clip.audio, 16000) - 330.0) < 2.0
    with pytest.raises(BadExample, match="no video stream") as e:
        decode_record(Record(id="w", media=wav), DecodeOptions())
    assert e.value.kind == "no_video"


def test_separate_video_and_audio_files(files, tmp_path):
    wav = make_wav(str(tmp_path / "track.wav"), seconds=2.0)
    clip = decode_record(Record(id="s", video=files["no_audio"], audio=wav), DecodeOptions(num_frames=4))
    assert clip.frames.shape[0] == 4 and clip.audio.shape == (32000,)


@pytest.mark.parametrize("name, kind, reason", [
    ("unreadable", "unreadable", "unreadable: not a media file"),
    ("unreadable_cut", "unreadable", "unreadable: not a media file or its header is corrupt"),
    ("truncated", "truncated", "truncated: "),
    ("no_audio", "no_audio", "no audio stream"),
    ("missing", "missing", "file not found"),
])
def test_bad_files_raise_a_precise_reason(files, name, kind, reason):
    with pytest.raises(BadExample) as e:
        decode_record(Record(id=name, media=files[name]), DecodeOptions(num_frames=4))
    assert e.value.kind == kind and e.value.path == files[name]
    assert reason in e.value.reason and str(e.value) == f"{files[name]}: {e.value.reason}"


def test_clip_shorter_than_window(files):
    with pytest.raises(BadExample, match=r"clip shorter than the window: video lasts 2.00 s") as e:
        decode_record(Record(id="s", media=files["good"], start=1.0, end=5.0), DecodeOptions())
    assert e.value.kind == "too_short"


def test_truncated_audio_is_reported(files):
    with pytest.raises(BadExample, match="truncated") as e:
        decode_record(Record(id="t", media=files["truncated"]), DecodeOptions(video=False))
    assert e.value.kind == "truncated"


# ------------------------------------------------------------ the pipeline skips and counts them

def raw_format(record, features):
    return {"frames": features["frames"], "audio": features["audio"]}


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


@pytest.fixture()
def bad_manifest(files, tmp_path):
    rel = lambda p: os.path.relpath(p, tmp_path)
    lines = [{"id": k, "media": rel(p)} for k, p in files.items()]
    lines += [{"id": "short", "media": rel(files["good"]), "start": 1.0, "end": 5.0},
              {"id": "bad-label", "media": rel(files["good"]), "labels": {"av": [0.2, 1.7]}},
              {"id": "no-media"},
              {"id": "no-conv", "media": rel(files["good"])}]
    return write_lines(tmp_path / "manifest.jsonl", lines)


def iterate(manifest, strict=False):
    fn = ExampleFn(media=MediaSpec(num_frames=2), features="raw", format_fn=raw_format)
    it = make_iterator(manifest, fn, PipelineConfig(batch_size=1, num_epochs=1, shuffle=False, strict=strict))
    ids = [b["id"][0] for b in it]
    return it, ids


def test_pipeline_skips_and_counts_each_bad_file_with_its_reason(bad_manifest, caplog):
    with caplog.at_level(logging.WARNING, logger="vaemotion_jax.data"):
        it, ids = iterate(bad_manifest)
    assert ids == ["good", "no-conv"]
    assert dict(it.skipped) == {"unreadable": 2, "truncated": 1, "no_audio": 1, "missing": 1, "too_short": 1}
    assert len(it.manifest_problems) == 2
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "manifest.jsonl:8: labels.av: arousal 1.7 outside [-1, 1]" in logged
    assert "manifest.jsonl:9: media: missing" in logged
    for name in ("noise.mp4", "cut_index.mp4", "cut_data.mp4", "silent.mp4", "not_there.mp4"):
        assert f"{name}: " in logged
    assert "clip shorter than the window" in logged
    summary = it.summary()
    assert "2 examples" in summary and "skipped 6" in summary and "2 manifest lines left out" in summary


def test_required_fields_and_bad_records_built_in_code(files):
    records = [Record(id="ok", media=files["good"], conversations=[{"role": "user", "content": "hi"}]),
               Record(id="no-conv", media=files["good"]),
               Record(id="bad-label", media=files["good"], labels={"a": [2.0, 0.0]})]
    fn = ExampleFn(media=MediaSpec(num_frames=2), features="raw", format_fn=raw_format,
                   require=("conversations",))
    it = make_iterator(records, fn, PipelineConfig(batch_size=1, num_epochs=1, shuffle=False))
    assert [b["id"][0] for b in it] == ["ok"]
    assert dict(it.skipped) == {"missing_field": 1, "bad_record": 1}


def test_strict_mode_fails_at_the_first_with_the_same_message(bad_manifest, files, caplog):
    with pytest.raises(ManifestError) as e:
        iterate(bad_manifest, strict=True)
    assert str(e.value).endswith("manifest.jsonl:8: labels.av: arousal 1.7 outside [-1, 1]")
    records = [Record(id="good", media=files["good"]), Record(id="noise", media=files["unreadable"])]
    fn = ExampleFn(media=MediaSpec(num_frames=2), features="raw", format_fn=raw_format)
    with caplog.at_level(logging.WARNING, logger="vaemotion_jax.data"):
        lenient = make_iterator(records, fn, PipelineConfig(batch_size=1, num_epochs=1, shuffle=False))
        list(lenient)
    logged = [r.getMessage() for r in caplog.records if "noise.mp4" in r.getMessage()]
    strict = make_iterator(records, fn, PipelineConfig(batch_size=1, num_epochs=1, shuffle=False, strict=True))
    assert next(strict)["id"][0] == "good"
    with pytest.raises(BadExample) as e:
        next(strict)
    assert logged == [f"skipped {e.value}"]


def test_an_endless_run_over_only_bad_files_stops_with_a_message(files):
    records = [Record(id=k, media=files[k]) for k in ("unreadable", "no_audio")]
    fn = ExampleFn(media=MediaSpec(num_frames=2), features="raw", format_fn=raw_format)
    it = make_iterator(records, fn, PipelineConfig(batch_size=1))
    with pytest.raises(RuntimeError, match=r"no usable example in a whole epoch of 2 records.*1 no_audio, 1 unreadable"):
        next(it)


def test_skipping_frames_nothing_refers_to_leaves_the_sampled_frames_identical(tmp_path,
                                                                               monkeypatch):
    """Frames with B-frames (x264 as the world encodes): decoding only the shown frames and the
    frames they refer to gives bit-identical pictures to decoding every frame."""
    from vaemotion_jax.data import decode
    from vaemotion_jax.embedded.synth import write_mp4
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    frames = np.stack([np.roll(texture, (i, 2 * i), (0, 1)) for i in range(75)])
    path = str(tmp_path / "b.mp4")
    write_mp4(path, frames, 25, np.zeros(48000, np.float32), 16000)
    for times in (sample_times(0.0, 3.0, fps=2.0), sample_times(1.1, 2.9, num_frames=3),
                  np.array([0.0, 0.01, 2.99])):
        skipped = decode.decode_frames(path, times)
        with monkeypatch.context() as m:
            m.setattr(decode, "shown_pts", lambda *a: None)
            every = decode.decode_frames(path, times)
        np.testing.assert_array_equal(skipped, every)
