from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from model.container import (
    PACKETS_A_HEARTBEAT,
    PICTURE_FRAME_MS,
    X264_FIXED_BUILD,
    IndexMissing,
    NalLayout,
    container_facts,
    nal_layout,
    referred_to_by_none,
)
from model.damage import check_damage, damaged_pictures
from model.decoders import PyAVCapture, open_with_opencv, sdr_from_hdr
from model.faces import (
    FaceTrack,
    crop_face,
    detect_faces,
    detect_faces_in_frames,
    expand_box,
    extract_face_crops,
    face_roll,
    iou,
    merge_same_faces,
    track_faces,
    upright_rotation,
)
from model.layout import picture_region
from model.timing import OutsideVideo, Timeline, TimeRange, format_time, parse_time, sample_indices
from model.truncation import MIN_LOST_BYTES, TS_TAIL_BYTES, mp4_index_missing
from model.video import FAILED_GRABS_AT_THE_END, PROGRESS_EVERY_FRAMES, FramesTooLarge, VideoError, probe_video, read_frames

from media import (
    VARIABLE_RATE_TIMES_S,
    cut_short_copy,
    late_stream_flv_copy,
    damaged_copy,
    damaged_unreferenced_picture_copy,
    face_frames,
    hdr_code_values,
    iter_face_frames,
    near_and_far_frames,
    over_blurred_copy,
    read_stamp,
    stamp_number,
    turn_quarter_clockwise_on_display,
    turned_about_centre,
    two_face_frames,
    undecodable_frame_copy,
    with_last_packet,
    write_animated_webp,
    write_behind_a_still_track,
    write_flat_h264,
    write_h264,
    write_hdr_video,
    write_key_every_10,
    write_said_old_x264,
    write_trimmed,
    write_video,
    write_with_silence,
    zeroed_stretch_copy,
)


def test_sample_indices_spread_over_whole_video():
    indices = sample_indices(1000, 20)
    assert len(indices) == 20
    assert indices[0] < 50 and indices[-1] > 950
    gaps = np.diff(indices)
    assert gaps.min() >= 49 and gaps.max() <= 51


def test_sample_indices_short_video():
    assert sample_indices(5, 20) == [0, 1, 2, 3, 4]
    assert sample_indices(0, 20) == []


def test_sample_indices_over_a_part():
    assert sample_indices(30, 5, start=10) == [12, 16, 20, 24, 28]
    assert sample_indices(12, 20, start=10) == [10, 11]
    assert sample_indices(10, 20, start=10) == []


@pytest.mark.parametrize(
    "text, seconds",
    [("90", 90), ("90.5", 90.5), (".5", 0.5), ("1:30", 90), (" 2:05 ", 125), ("0:59.25", 59.25), ("1:02:03.5", 3723.5)],
)
def test_times_are_read_as_seconds_or_minutes_and_seconds(text, seconds):
    assert parse_time(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "-5", "1e3", "1:60", "1:60:00", "1::2", "1:2:3:4", "1:30s"])
def test_what_is_not_a_time_is_refused(text):
    with pytest.raises(ValueError, match="is not a time"):
        parse_time(text)


@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (5, "0:05"), (90.5, "1:30.5"), (59.96, "1:00"), (3725, "1:02:05")])
def test_times_are_written_as_minutes_and_seconds(seconds, text):
    assert format_time(seconds) == text


@pytest.mark.parametrize("start, end", [(-1, None), (float("nan"), None), (5, 5), (5, 2), (0, float("inf"))])
def test_a_part_must_start_at_zero_or_later_and_end_after_it_starts(start, end):
    with pytest.raises(ValueError, match="part to examine"):
        TimeRange(start, end)


@pytest.mark.parametrize("seek_min_gap", [10**9, 10, 1])  # from the first frame; seeking to the part; seeking to each frame
def test_a_part_of_the_video_is_sampled_and_read_as_the_whole_reads_it(media, seek_min_gap):
    whole = read_frames(media["face_h264"], 40)
    sampled = read_frames(media["face_h264"], 6, seek_min_gap=seek_min_gap, part=TimeRange(1.2, 3.0))
    assert sampled.method == ("seek" if seek_min_gap == 1 else "sequential")
    assert sampled.span == (12, 30) and sampled.span_s == pytest.approx((1.2, 3.0))
    assert sampled.indices == sample_indices(30, 6, start=12) and len(sampled.indices) == 6
    assert sampled.info.frame_count == 40  # the video's facts stay the whole video's
    for index, frame in zip(sampled.indices, sampled.frames):
        assert np.abs(frame.astype(int) - whole.frames[index].astype(int)).mean() < 2


def test_a_part_from_a_time_to_the_end_and_one_past_the_end(media):
    sampled = read_frames(media["face_h264"], 10, part=TimeRange(2.5))
    assert sampled.span == (25, 40) and sampled.indices[0] >= 25 and sampled.indices[-1] >= 38
    assert read_frames(media["face_h264"], 10, part=TimeRange(3.0, 60.0)).span == (30, 40)
    with pytest.raises(OutsideVideo, match="0:04 long"):
        read_frames(media["face_h264"], 10, part=TimeRange(4.0))


@pytest.mark.parametrize("clip", ["face_h264", "face_mp4v"])
def test_read_frames_count_and_spread(media, clip):
    sampled = read_frames(media[clip], 10)
    assert len(sampled.frames) == 10
    assert sampled.indices[0] <= 3 and sampled.indices[-1] >= 36
    assert sampled.frames[0].shape == (360, 640, 3) and sampled.frames[0].dtype == np.uint8
    assert sampled.info.frame_count == 40 and sampled.info.fps == pytest.approx(10)


def test_seek_and_sequential_read_the_same_frames(media):
    sequential = read_frames(media["face_mp4v"], 8, seek_min_gap=10**9)
    seeking = read_frames(media["face_mp4v"], 8, seek_min_gap=1)
    assert sequential.method == "sequential" and seeking.method == "seek"
    assert sequential.indices == seeking.indices
    for a, b in zip(sequential.frames, seeking.frames):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2


def test_the_check_for_damage_decodes_an_old_x264_build_as_such(tmp_path):
    """x264 states its build in its first picture, and FFmpeg decodes the 4:4:4 video of builds
    before 151 otherwise, working around their bugs; a decoder that starts at a later key frame
    passes that picture over. In FaceForensics++'s clips (core 148), whole, the check for damage
    found every picture broken in the group of a frame it looked at far in. Such a build's
    pictures cannot be made here: these, which today's x264 made, state one, and fail to decode
    as they say, as in one pass from the first picture."""
    stated = write_said_old_x264(tmp_path / "old.mp4", face_frames(200, (320, 180)))
    assert container_facts(stated).x264_build == 148
    # the first look alone (a span that ends where it starts: its first picture, once more)
    assert damaged_pictures(stated, (0.0, 0.0), examined_s=[15.0]) > damaged_pictures(stated, (0.0, 0.0))
    honest = write_video(tmp_path / "new.mp4", face_frames(200, (320, 180)), "libx264", pix_fmt="yuv444p", options={"g": "20"})
    assert container_facts(honest).x264_build >= X264_FIXED_BUILD
    assert damaged_pictures(honest, (0.0, 0.0), examined_s=[15.0]) == 0


@pytest.mark.parametrize("seek_min_gap", [None, 1])  # to the key frames nearest, as their cost decides; to each frame
def test_a_part_of_an_old_x264_build_is_read_as_one_pass_decodes_it(tmp_path, seek_min_gap):
    """The same stated build (above), read in a part after a seek: these pictures, which today's
    x264 made, decode as made where the build is not told, and garbled, as one pass from the
    first picture decodes them, where it is. OpenCV's decoder cannot be told it: such a video
    is sought by PyAV's."""
    frames = face_frames(200, (320, 180))
    path = write_said_old_x264(tmp_path / "old.mp4", frames)
    whole = read_frames(path, 200, seek_min_gap=10**9)
    sampled = read_frames(path, 5, seek_min_gap=seek_min_gap, part=TimeRange(10.0))
    assert sampled.method == "seek" and sampled.indices[0] >= 100
    for index, frame in zip(sampled.indices, sampled.frames):
        assert np.abs(whole.frames[index].astype(int) - frames[index]).mean() > 10
        assert np.abs(frame.astype(int) - frames[index]).mean() > 10, index


@pytest.mark.parametrize(
    "length, key_every, method, read",
    [
        (700, 70, "seek", [70, 280, 420, 630]),  # 175 frames apart, each with a key frame near
        (300, 10, "seek", [40, 110, 190, 260]),  # 75 apart: as far as a short clip's
        (700, 700, "sequential", [87, 262, 437, 612]),  # the first frame alone a key frame
    ],
)
def test_frames_are_read_at_the_key_frames_nearest_them_where_that_decodes_fewer(tmp_path, length, key_every, method, read):
    """A seek decodes from the key frame before the frame sought: where each frame has a key frame
    within half the gap between them, it is read there, by a seek that decodes that frame alone,
    however near the frames are; where the key frames are too far apart, in one pass, as spread.
    Each frame read is the frame it is said to be."""
    frames = [stamp_number(frame, i % 256) for i, frame in enumerate(iter_face_frames(length, (320, 180)))]
    params = f"keyint={key_every}:min-keyint={key_every}:scenecut=0"
    path = write_video(tmp_path / "clip.mp4", frames, "libx264", options={"x264-params": params, "preset": "ultrafast"})
    sampled = read_frames(path, 4)
    assert sampled.method == method and sampled.indices == read
    assert [read_stamp(frame) for frame in sampled.frames] == [index % 256 for index in read]
    assert sampled.timeline.frame_count == length and sampled.span_s == (0.0, length / 10)


def test_a_pass_through_frames_far_apart_reports_its_progress_between_them(tmp_path):
    """In a video with one key frame, the frames are read in one pass; between two of them far
    apart the progress is still heard (where an analysis is stopped, or timed)."""
    frames = iter_face_frames(700, (320, 180))
    path = write_video(tmp_path / "clip.mp4", frames, "libx264", options={"x264-params": "keyint=700:scenecut=0", "preset": "ultrafast"})
    heard: list[float] = []
    sampled = read_frames(path, 4, progress=heard.append)
    assert sampled.method == "sequential" and sampled.indices == [87, 262, 437, 612]
    assert heard == sorted(heard) and heard[-1] == 1.0
    spread = sampled.indices[-1] - sampled.indices[0]
    assert heard[0] == 0.0 and max(np.diff(heard)) * spread <= PROGRESS_EVERY_FRAMES + 1e-9  # not only at the 4 frames, 175 apart

    class Stopped(Exception):
        pass

    def stop_past_half(fraction: float) -> None:
        if fraction > 0.5:
            raise Stopped

    with pytest.raises(Stopped):
        read_frames(path, 4, progress=stop_past_half)


@pytest.mark.parametrize(
    "codec, params",
    [
        ("libx264", None),
        ("libx265", "log-level=error"),  # as phones record, and as encoders shrink videos to
        ("libx265", "temporal-layers=3:log-level=error"),  # B-frames of a lower sub-layer are referred to
    ],
)
def test_a_pass_decodes_no_picture_that_none_refers_to_unless_wanted_and_reads_the_same_frames(tmp_path, monkeypatch, codec, params):
    """x264's and x265's defaults give B-frames, most of which no other picture refers to: a
    pass needs only those of them it reads, and reads the very frames that decoding every
    picture gives."""
    import model.video as video

    frames = (stamp_number(frame, i) for i, frame in enumerate(iter_face_frames(120, (320, 180))))
    path = write_video(tmp_path / "clip.mp4", frames, codec, options={"x265-params": params} if params else {"preset": "medium"})
    captures = []
    pass_over = PyAVCapture.pass_over_unreferenced
    monkeypatch.setattr(PyAVCapture, "pass_over_unreferenced", lambda self, wanted: (captures.append(self), pass_over(self, wanted))[1])
    heard: list[float] = []
    sampled = read_frames(path, 12, progress=heard.append)
    assert [read_stamp(frame) for frame in sampled.frames] == sampled.indices and len(sampled.indices) == 12
    assert sampled.method == "sequential" and sampled.undecoded == 0 and heard == sorted(heard) and heard[-1] == 1.0
    (capture,) = captures
    assert len(capture.passed_over) >= 30 and not capture.passed_over & set(sampled.indices)
    monkeypatch.setattr(video, "PASSED_OVER_CODECS", frozenset())  # OpenCV's decoder, which decodes every picture
    every = read_frames(path, 12)
    assert len(captures) == 1 and every.indices == sampled.indices and every.undecoded == 0
    assert all(np.array_equal(a, b) for a, b in zip(every.frames, sampled.frames))


@pytest.mark.parametrize(
    "codec, seed",
    [
        ("libx264", 0),
        ("libx264", 1),  # breaks a frame read beyond decoding
        ("libx265", 1),  # HEVC's decoder flags no picture it patches over
        ("libx265", 2),
    ],
)
def test_a_damaged_file_is_read_alike_every_time_as_one_thread_decodes_it(tmp_path, monkeypatch, codec, seed):
    """The decoder's frame threads patch a damaged picture over differently from one reading to
    the next (a damaged upload got a different verdict each time): where a picture is found
    damaged, the pass is made again on one thread, which patches it over the same way."""
    frames = (stamp_number(frame, i) for i, frame in enumerate(iter_face_frames(120, (320, 180))))
    options = {"x265-params": "log-level=error"} if codec == "libx265" else {"preset": "medium"}
    intact = write_video(tmp_path / "clip.mp4", frames, codec, options=options)
    damaged = damaged_copy(intact, tmp_path / "damaged.mp4", count=20, seed=seed)
    threads = []
    decode_on = PyAVCapture.decode_on_threads
    monkeypatch.setattr(PyAVCapture, "decode_on_threads", lambda self, several: (threads.append((self, several)), decode_on(self, several))[1])
    readings = [read_frames(damaged, 12) for _ in range(3)]
    assert [several for _, several in threads] == [True, False] * 3  # each reading begun on frame threads, and made again
    assert all(capture.damaged for capture, several in threads if several)
    wanted = read_frames(intact, 12).indices
    with av.open(str(damaged)) as container:  # on one thread, the packets the reading decodes
        stream = container.streams.video[0]
        stream.thread_count = 1
        times = sorted(packet.pts for packet in container.demux(stream) if packet.size)
        layout = nal_layout(stream.codec_context)
        container.seek(0)
        decoded = {}
        for packet in container.demux(stream):
            if packet.pts in {times[index] for index in wanted} or not referred_to_by_none(packet, layout):
                with contextlib.suppress(av.InvalidDataError):
                    decoded.update((frame.pts, (frame.is_corrupt, frame.to_ndarray(format="rgb24"))) for frame in packet.decode())
    if codec == "libx264":  # damage the frames read rest on, as the decoder flags it
        assert any(corrupt for time, (corrupt, _) in decoded.items() if time < times[wanted[-1]])
    for sampled in readings:
        assert sampled.indices == [index for index in wanted if times[index] in decoded] and sampled.method == "sequential"
        assert sampled.undecoded == readings[0].undecoded
        assert all(np.array_equal(frame, decoded[times[index]][1]) for index, frame in zip(sampled.indices, sampled.frames))


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])
def test_the_h264_pictures_taken_for_referred_to_by_none_are_those_ffmpeg_skips_as_such(tmp_path, suffix):
    path = write_h264(tmp_path / f"clip{suffix}", iter_face_frames(60, (320, 180)))
    passed, kept, packets, layout = _passed_over_and_skipped_by_ffmpeg(path)
    assert layout.length_size == (4 if suffix == ".mp4" else 0)  # MP4 states each NAL unit's length; a transport stream parts them by start codes
    assert 0 < len(passed) == len(packets) - kept


def _passed_over_and_skipped_by_ffmpeg(path: Path) -> tuple[set[int], int, list[av.Packet], NalLayout]:
    """The times of the pictures `referred_to_by_none` takes for such, how many frames FFmpeg's
    decoder puts out told to skip those no other refers to, the packets, and the stream's layout."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        layout = nal_layout(stream.codec_context)
        packets = [packet for packet in container.demux(stream) if packet.size]
        passed = {packet.pts for packet in packets if referred_to_by_none(packet, layout)}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        kept = sum(1 for _ in container.decode(stream))
    return passed, kept, packets, layout


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".ts"])
@pytest.mark.parametrize("sub_layers", [1, 3])
def test_the_hevc_pictures_taken_for_referred_to_by_none_decode_to_no_other(tmp_path, suffix, sub_layers):
    """HEVC's sub-layer non-reference pictures (most of x265's B-frames) may be referred to by
    pictures of a higher temporal sub-layer: only those in the highest are passed over, as the
    stream's parameter sets tell it. The other pictures decode as they do beside them."""
    params = f"temporal-layers={sub_layers}:log-level=error" if sub_layers > 1 else "log-level=error"
    path = write_video(tmp_path / f"clip{suffix}", iter_face_frames(60, (320, 180)), "libx265", options={"x265-params": params})
    passed, kept, packets, layout = _passed_over_and_skipped_by_ffmpeg(path)
    assert layout.top_sub_layer == sub_layers - 1
    # FFmpeg's decoder skips those of lower sub-layers too: there, no fewer
    assert 0 < len(passed) <= len(packets) - kept
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        every = {frame.pts: frame.to_ndarray(format="rgb24") for frame in container.decode(stream)}
        container.seek(0)
        others = {}
        for packet in container.demux(stream):
            if packet.pts not in passed:
                for frame in packet.decode():
                    assert not frame.is_corrupt
                    others[frame.pts] = frame.to_ndarray(format="rgb24")
    assert set(others) == set(every) - passed
    assert all(np.array_equal(image, every[time]) for time, image in others.items())


def test_an_hevc_picture_is_taken_for_referred_to_by_none_in_the_highest_sub_layer_of_the_base_layer_alone():
    layout = NalLayout("hevc", 4, 2)  # three temporal sub-layers

    def picture(nal_type: int, sub_layer: int, layer: int = 0) -> av.Packet:
        header = bytes([nal_type << 1 | layer >> 5, (layer & 0x1F) << 3 | (sub_layer + 1)])
        return av.Packet((258).to_bytes(4, "big") + header + b"\x9a" * 256)

    assert referred_to_by_none(picture(0, 2), layout)  # TRAIL_N in the highest sub-layer
    assert referred_to_by_none(picture(2, 2), layout)  # TSA_N
    assert not referred_to_by_none(picture(0, 1), layout)  # pictures of a higher sub-layer may refer to it
    assert not referred_to_by_none(picture(1, 2), layout)  # TRAIL_R
    assert not referred_to_by_none(picture(0, 2, layer=1), layout)  # a second view's (MV-HEVC: a phone's spatial video)
    assert not referred_to_by_none(picture(0, 2), layout._replace(top_sub_layer=None))  # sub-layers not told


def test_an_h264_nal_units_length_that_begins_as_a_start_code_does_is_read_as_its_length(tmp_path):
    """In MP4 a NAL unit of 256 to 511 bytes begins 00 00 01, as a start code does in a stream
    whose NAL units are parted by them: taken for one, it hid a picture's slice header."""
    path = write_h264(tmp_path / "clip.mp4", iter_face_frames(4, (320, 180)))
    with av.open(str(path)) as container:
        layout = nal_layout(container.streams.video[0].codec_context)

        def slice_with_header(header: int) -> av.Packet:
            return av.Packet((257).to_bytes(4, "big") + bytes([header]) + b"\x9a" * 256)

        assert not referred_to_by_none(slice_with_header(0x41), layout)  # a P slice, nal_ref_idc 2
        assert referred_to_by_none(slice_with_header(0x01), layout)  # a B slice, nal_ref_idc 0
        # a packet not stored as the stream says (after a start code) is taken to be referred to
        assert not referred_to_by_none(av.Packet(b"\x00\x00\x00\x01\x01" + b"\x9a" * 256), layout)


def test_the_reading_of_a_files_packets_is_heard_and_can_be_stopped_before_any_decoding(tmp_path, monkeypatch):
    """A file of many tiny frames holds millions of packets, all read before a frame is decoded:
    the reading says it is alive, and what the progress raises then stops it."""
    frames = [np.full((16, 16, 3), i % 256, np.uint8) for i in range(3 * PACKETS_A_HEARTBEAT)]
    path = write_video(tmp_path / "tiny.mp4", frames, "libx264", options={"preset": "ultrafast"})
    beats: list[int] = []
    assert len(container_facts(path, heartbeat=lambda: beats.append(1)).shown_s) == len(frames)
    assert len(beats) >= 3

    class Stopped(Exception):
        pass

    def stop(fraction: float) -> None:
        raise Stopped

    opened: list[Path] = []
    monkeypatch.setattr("model.video.open_with_opencv", opened.append)
    with pytest.raises(Stopped):
        read_frames(path, 10, progress=stop)
    assert opened == []  # stopped before a decoder opened the file


def test_a_part_far_in_is_read_in_one_pass_from_the_key_frame_before_it(tmp_path, monkeypatch):
    """Frames too near one another for a seek each are read in one pass; where the part begins
    past a key frame, the pass begins there (by PyAV's seek, which lands on it), not at the start."""
    frames = [stamp_number(frame, i % 256) for i, frame in enumerate(iter_face_frames(300, (320, 180)))]
    params = "keyint=50:min-keyint=50:scenecut=0"
    path = write_video(tmp_path / "clip.mp4", frames, "libx264", options={"x264-params": params, "preset": "ultrafast"})
    sought, set_property = [], PyAVCapture.set

    def noting_seeks(capture: PyAVCapture, prop: int, value: float) -> bool:
        if prop == cv2.CAP_PROP_POS_FRAMES:
            sought.append(value)
        return set_property(capture, prop, value)

    monkeypatch.setattr(PyAVCapture, "set", noting_seeks)
    sampled = read_frames(path, 20, part=TimeRange(16.0, 26.0))
    assert sampled.method == "sequential" and sampled.indices == sample_indices(260, 20, start=160)
    assert sought == sampled.indices[:1]
    assert [read_stamp(frame) for frame in sampled.frames] == [index % 256 for index in sampled.indices]


@pytest.mark.parametrize("seek_min_gap", [10**9, 1])
def test_large_frames_are_shrunk_and_the_video_keeps_its_size(media, seek_min_gap):
    full = read_frames(media["face_h264"], 6, seek_min_gap=seek_min_gap)
    shrunk = read_frames(media["face_h264"], 6, seek_min_gap=seek_min_gap, max_side=320)
    assert full.scale == 1.0 and shrunk.scale == 0.5 and shrunk.indices == full.indices
    assert (shrunk.info.width, shrunk.info.height) == (640, 360)
    for small, large in zip(shrunk.frames, full.frames):
        assert small.shape == (180, 320, 3)
        assert np.abs(small.astype(int) - cv2.resize(large, (320, 180), interpolation=cv2.INTER_AREA)).mean() < 1


@pytest.mark.parametrize("codec", ["libx264", "libsvtav1"])  # AV1 is decoded by PyAV, H.264 by OpenCV
@pytest.mark.parametrize("seek_min_gap", [10**9, 1])
def test_a_portrait_video_stored_sideways_is_read_upright(tmp_path, seek_min_gap, codec):
    upright = face_frames(12)
    sideways = [np.ascontiguousarray(np.rot90(f)) for f in upright]  # what the phone stores
    path = turn_quarter_clockwise_on_display(write_video(tmp_path / "portrait.mp4", sideways, codec))
    sampled = read_frames(path, 4, seek_min_gap=seek_min_gap)
    assert (sampled.info.width, sampled.info.height) == (640, 360)
    for index, frame in zip(sampled.indices, sampled.frames):
        assert frame.shape == (360, 640, 3) and np.abs(frame.astype(int) - upright[index]).mean() < 5
    assert detect_faces(sampled.frames[0])  # so the face is found as in any other video


@pytest.mark.parametrize("name", ["clip.mp4", "clip.webm"])
@pytest.mark.parametrize("seek_min_gap", [10**9, 1])
def test_av1_which_opencv_cannot_decode_is_read_through_pyav(tmp_path, name, seek_min_gap):
    frames = face_frames(12)
    path = write_video(tmp_path / name, frames, "libsvtav1")
    capture = cv2.VideoCapture(str(path))
    assert not capture.read()[0]  # OpenCV's FFmpeg has no AV1 decoder but the hardware one
    capture.release()
    sampled = read_frames(path, 5, seek_min_gap=seek_min_gap)
    assert sampled.indices == sample_indices(12, 5) and sampled.info.frame_count == 12
    assert (sampled.info.width, sampled.info.height) == (640, 360) and sampled.info.fps == pytest.approx(10)
    for index, frame in zip(sampled.indices, sampled.frames):
        assert np.abs(frame.astype(int) - frames[index]).mean() < 5


def test_ffmpeg_keeps_quiet_on_stderr_and_failures_are_still_raised(tmp_path):
    av1 = write_video(tmp_path / "clip.mp4", face_frames(6), "libsvtav1")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(write_h264(tmp_path / "whole.mp4", face_frames(6)).read_bytes()[:2000])
    # not a video, named with a run of digits (as an upload's stored name may be): OpenCV tries it
    # as a numbered image sequence too, and its number is too large for one
    notes = tmp_path / "4294967296123_notes.mp4"
    notes.write_text("These are plain notes, not a video.\n" * 50)
    script = (
        "import sys\n"
        "from model.video import VideoError, read_frames\n"
        "print(len(read_frames(sys.argv[1], 3).frames))\n"
        "for path in sys.argv[2:]:\n"
        "    try:\n"
        "        read_frames(path, 3)\n"
        "    except VideoError as error:\n"
        "        print(error)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_LOG_LEVEL")}  # as served
    root = Path(__file__).resolve().parents[1]
    files = [str(av1), str(truncated), str(notes)]
    run = subprocess.run([sys.executable, "-c", script, *files], cwd=root, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "3" and "video" in lines[1] and lines[2] == "This file could not be opened as a video."
    assert " @ 0x" not in run.stderr, run.stderr  # FFmpeg's "[av1 @ 0x…] …" lines
    assert "[ WARN" not in run.stderr, run.stderr  # OpenCV's own


def test_pyav_capture_reads_and_seeks_to_what_opencv_reads(tmp_path):
    def every_frame(capture):
        frames = []
        while (frame := capture.read())[0]:
            frames.append(frame[1])
        capture.release()
        return frames

    path = write_video(tmp_path / "clip.mp4", face_frames(40), "libx264", options={"g": "8"})  # a key frame every 8
    opencv, pyav = every_frame(cv2.VideoCapture(str(path))), every_frame(PyAVCapture(path))
    assert len(opencv) == len(pyav) == 40
    assert all(np.array_equal(a, b) for a, b in zip(opencv, pyav))  # BGR both, the same decoder
    capture = PyAVCapture(path)
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 40 and capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10)
    for index in (37, 5, 0, 21, 8, 39):  # forwards and back, on and between key frames
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        assert np.array_equal(capture.read()[1], opencv[index]), index
    capture.release()


def test_a_stream_pyav_cannot_seek_is_read_in_one_pass(tmp_path, monkeypatch):
    import av

    import model.video as video

    class Unseekable:
        def __init__(self, container):
            self._container = container

        def seek(self, *args, **kwargs):
            raise av.FFmpegError(1, "cannot seek")

        def __getattr__(self, name):
            return getattr(self._container, name)

    def unseekable_capture(path, **options):
        capture = PyAVCapture(path, **options)
        capture._container = Unseekable(capture._container)
        return capture

    frames = face_frames(12)
    path = write_video(tmp_path / "clip.mp4", frames, "libsvtav1")
    capture = unseekable_capture(path)
    assert capture.set(cv2.CAP_PROP_POS_FRAMES, 5) is False and capture.read() == (False, None)
    capture.release()
    monkeypatch.setattr(video, "PyAVCapture", unseekable_capture)
    sampled = read_frames(path, 4, seek_min_gap=1)
    assert sampled.method == "sequential" and sampled.indices == sample_indices(12, 4)
    assert all(np.abs(frame.astype(int) - frames[i]).mean() < 5 for i, frame in zip(sampled.indices, sampled.frames))


@pytest.fixture
def counted_without_decoding(monkeypatch):
    """Fails a test where every frame is decoded to count them (the check for a photo, which
    decodes two, is left to run)."""
    import model.video as video

    counting = video._count_frames

    def count_no_further_than_a_photo_check(capture, limit=None):
        assert limit is not None, "every frame was decoded to count them"
        return counting(capture, limit)

    monkeypatch.setattr(video, "_count_frames", count_no_further_than_a_photo_check)


def test_a_recording_without_length_or_index_is_sampled_without_decoding_it_all(tmp_path, counted_without_decoding):
    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(60))]
    # as a browser records WebM: no duration, no frame count, no index to seek by
    path = write_video(tmp_path / "recording.webm", frames, "libvpx", container_options={"live": "1"})
    assert probe_video(path).frame_count == 0
    for seek_min_gap, method in [(1, "seek"), (10**6, "sequential")]:
        sampled = read_frames(path, 6, seek_min_gap=seek_min_gap)
        assert sampled.method == method and sampled.info.frame_count == 60
        assert sampled.indices == sample_indices(60, 6)
        assert [read_stamp(frame) for frame in sampled.frames] == sampled.indices


def combing(frame: np.ndarray) -> float:
    """How far each row is from the mean of its neighbours: high where two fields disagree."""
    rows = frame.astype(float)
    return float(np.abs(rows[1:-1] - (rows[:-2] + rows[2:]) / 2).mean())


def test_interlaced_pictures_are_read_one_field_at_a_time(tmp_path):
    # two fields shot apart: the face has moved 24 px between them
    shot = face_frames(2)
    woven = shot[0].copy()
    woven[1::2] = np.roll(shot[1], 24, axis=1)[1::2]
    frames = [woven] * 6
    flagged = write_video(tmp_path / "interlaced.mp4", frames, "libx264", options={"x264-params": "interlaced=1:tff=1"})
    unflagged = write_video(tmp_path / "progressive.mp4", frames, "libx264")
    (read,) = read_frames(flagged, 1).frames
    assert combing(read) < 0.2 * combing(woven)
    assert np.abs(read.astype(int) - shot[0]).mean() < 8  # the top field's picture
    # a picture the file does not call interlaced is read as it is, combs and all
    (as_is,) = read_frames(unflagged, 1).frames
    assert combing(as_is) > 0.7 * combing(woven)


@pytest.mark.parametrize("transfer", ["hlg", "pq"])
def test_hdr_code_values_are_tone_mapped_to_the_sdr_picture_of_the_scene(transfer):
    picture = face_frames(1)[0]
    mapped = sdr_from_hdr(hdr_code_values(picture, transfer), transfer)
    assert np.abs(mapped.astype(int) - picture).mean() < 1.0


def test_an_iphone_hdr_video_is_read_as_sdr_video_of_the_scene(tmp_path):
    frames = face_frames(6)
    path = write_hdr_video(tmp_path / "hlg.mov", frames, "hlg")
    sampled = read_frames(path, 3)
    assert np.mean([np.abs(frame.astype(int) - frames[i]).mean() for i, frame in zip(sampled.indices, sampled.frames)]) < 5
    # what was read before: HLG code values as if they were SDR ones, a flatter, darker face
    ok, as_is = cv2.VideoCapture(str(path)).read()
    assert ok and np.abs(as_is[..., ::-1].astype(int) - frames[0]).mean() > 9


@pytest.mark.parametrize("name, still_frames", [("clip.mov", 1), ("clip.mkv", 3)])
@pytest.mark.parametrize("seek_min_gap", [10**9, 1])
def test_the_video_is_read_not_a_still_track_stored_before_it(tmp_path, name, still_frames, seek_min_gap):
    frames = face_frames(40)
    path = write_behind_a_still_track(tmp_path / name, frames, still_frames)
    info = probe_video(path)  # as an upload is checked: not taken for a photo
    assert (info.width, info.height) == (640, 360) and info.frame_count in (0, 40)  # the MKV header has no count
    sampled = read_frames(path, 8, seek_min_gap=seek_min_gap)
    assert sampled.info.frame_count == 40 and sampled.indices == sample_indices(40, 8)
    assert all(np.abs(frame.astype(int) - frames[i]).mean() < 5 for i, frame in zip(sampled.indices, sampled.frames))


@pytest.mark.parametrize("seek_min_gap", [10**9, 1])
def test_a_camcorder_capture_in_raw_dv_has_its_own_length_and_times(tmp_path, seek_min_gap):
    """FFmpeg gives raw DV an average rate of 60,000 a second, and OpenCV counts its frames in
    ticks of that rate: a 0.67 s capture of 20 frames seemed to hold 40,040 and to last 1,602 s
    (at the 25 a second put in for an odd rate), its frames shown minutes apart."""
    frames = [stamp_number(cv2.resize(frame, (720, 480)), i) for i, frame in enumerate(face_frames(20))]
    path = write_video(tmp_path / "capture.dv", frames, "dvvideo", fps=Fraction(30000, 1001), pix_fmt="yuv411p")
    info = probe_video(path)  # as an upload is checked
    assert info.fps == pytest.approx(29.97, abs=0.01) and info.frame_count in (0, 20)
    sampled = read_frames(path, 6, seek_min_gap=seek_min_gap)
    assert sampled.info.frame_count == 20 and sampled.info.fps == pytest.approx(29.97, abs=0.01)
    assert sampled.timeline.duration_s == pytest.approx(20 * 1001 / 30000)
    assert sampled.indices == sample_indices(20, 6)
    assert sampled.frames[0].shape[:2] == (480, 640)  # 4:3 as shown: NTSC DV's pixels are 8/9 as wide as tall
    assert [read_stamp(cv2.resize(frame, (720, 480))) for frame in sampled.frames] == sampled.indices


@pytest.mark.parametrize("turned", [False, True])
@pytest.mark.parametrize("seek_min_gap", [10**9, 1])
def test_pixels_that_are_not_square_are_stretched_as_a_player_shows_them(tmp_path, turned, seek_min_gap):
    """16:9 stored in 3/4 of the columns, with pixels a third wider than tall (as HDV camcorders,
    DVDs and broadcast record): read as stored, every face was a quarter too narrow."""
    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(12))]
    squeezed = [cv2.resize(frame, (480, 360), interpolation=cv2.INTER_AREA) for frame in frames]
    path = write_video(tmp_path / "hdv.mp4", squeezed, "libx264", pixel_aspect=Fraction(4, 3))
    if turned:  # and shown a quarter turned: the stored columns are then the picture's rows
        path = turn_quarter_clockwise_on_display(path)
        frames = [np.ascontiguousarray(np.rot90(frame, -1)) for frame in frames]
    sampled = read_frames(path, 4, seek_min_gap=seek_min_gap)
    assert sampled.frames[0].shape[:2] == frames[0].shape[:2] and sampled.scale == 1
    assert (sampled.info.height, sampled.info.width) == frames[0].shape[:2]
    assert all(np.abs(frame.astype(int) - frames[i]).mean() < 5 for i, frame in zip(sampled.indices, sampled.frames))


@pytest.mark.parametrize("seek_min_gap", [10**9, 1])
def test_a_clip_trimmed_without_reencoding_is_read_from_its_first_shown_frame(tmp_path, seek_min_gap):
    """Its header counts 20 frames, of which an edit list hides 5: seeking, the last quarter of
    the frames spread over the count lay past the end, and the clip seemed to last 2 s, not 1.5."""
    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(40))]
    path = write_trimmed(tmp_path / "trimmed.mp4", frames, first_shown=25)
    sampled = read_frames(path, 5, seek_min_gap=seek_min_gap)
    assert sampled.info.frame_count == 15 and sampled.timeline.duration_s == pytest.approx(1.5)
    assert sampled.info.stated_duration_s is None  # the hidden frames are there: the file is whole
    assert sampled.indices == sample_indices(15, 5)
    assert [read_stamp(frame) for frame in sampled.frames] == [25 + i for i in sampled.indices]


@pytest.mark.parametrize(
    "name, codec, options",
    [
        ("web.mp4", "libx264", {"movflags": "+faststart"}),
        ("film.mkv", "libx264", {}),
        ("clip.webm", "libvpx-vp9", {}),
        ("old.avi", "libx264", {}),  # FFmpeg guesses a cut AVI's length from its size: 6 s of 10
    ],
)
def test_a_file_cut_short_states_the_length_its_header_gives(tmp_path, name, codec, options):
    """An MP4 whose index comes first counts frames a cut file does not hold, as an AVI's header
    does; a Matroska or WebM track states its length. Either way the part held is read, and the
    length stated is kept."""
    whole = write_video(tmp_path / name, face_frames(100), codec, container_options=options)
    sampled = read_frames(whole, 10)
    assert sampled.info.stated_duration_s is None and sampled.info.duration_s == pytest.approx(10.0)
    assert not sampled.info.cut_short
    cut = cut_short_copy(whole, tmp_path / f"cut-{name}")
    sampled = read_frames(cut, 10)
    assert sampled.info.stated_duration_s == pytest.approx(10.0) and 2.0 < sampled.info.duration_s < 8.0
    assert sampled.info.cut_short
    assert len(sampled.frames) >= 8 and sampled.span_s[1] == pytest.approx(sampled.info.duration_s)


@pytest.mark.parametrize("share", [0.45, 0.7])
@pytest.mark.parametrize(
    "name, codec, options, streamed",
    [
        ("recording.webm", "libvpx-vp9", {}, True),  # a browser's recording
        ("live.mkv", "libx264", {"live": "1"}, True),  # a live recorder's: clusters of no stated size
        ("screen.mp4", "libx264", {"movflags": "frag_keyframe+empty_moov"}, False),  # fragmented
        ("broadcast.ts", "libx264", {}, False),
        ("old.flv", "libx264", {}, False),
        ("dvd.mpg", "mpeg2video", {}, False),  # an MPEG program stream, as DVDs and camcorders store one
    ],
)
def test_a_file_cut_short_whose_header_states_no_length_is_told_where_it_ends_within_a_frame(
    tmp_path, name, codec, options, streamed, share
):
    """These containers state no length to compare, but a file cut short ends within the data of
    a frame: the part held is read, and the file is told as cut short."""
    whole = write_video(tmp_path / name, face_frames(100), codec, container_options=options, streamed=streamed)
    sampled = read_frames(whole, 10)
    assert not sampled.info.cut_short and sampled.info.duration_s == pytest.approx(10.0)
    sampled = read_frames(cut_short_copy(whole, tmp_path / f"cut-{name}", share), 10)
    assert sampled.info.cut_short and sampled.info.stated_duration_s is None
    assert 0.3 * 10 < sampled.info.duration_s < (share + 0.1) * 10 and len(sampled.frames) >= 8


@pytest.mark.parametrize("past_fragment_header", [-4, 0, 4])  # within it (FFmpeg cannot open that); after it; within what follows
def test_a_fragmented_mp4_cut_at_a_fragments_header_is_told_as_cut_short(tmp_path, past_fragment_header):
    """Cut within a fragment's header, or after it, at or within the header of its media data,
    the file lacks that fragment's frames: the fragments before it are read, and the file is told
    as cut short."""
    options = {"x264-params": "keyint=25:min-keyint=25:scenecut=0"}
    fragmented = {"movflags": "frag_keyframe+empty_moov"}
    whole = write_video(tmp_path / "screen.mp4", face_frames(100), "libx264", options=options, container_options=fragmented)
    data, at, boxes = whole.read_bytes(), 0, []
    while at + 8 <= len(data):  # the top-level boxes
        boxes.append((at, int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8]))
        at += boxes[-1][1]
    second_fragment = [(start, size) for start, size, kind in boxes if kind == b"moof"][1]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: sum(second_fragment) + past_fragment_header])
    sampled = read_frames(cut, 10)
    assert sampled.info.cut_short and sampled.info.duration_s == pytest.approx(2.5) and len(sampled.frames) == 10


@pytest.mark.parametrize(
    "name, codec, options",
    [("film.mkv", "libx264", {}), ("screen.mp4", "libx264", {"movflags": "frag_keyframe+empty_moov"}), ("dvd.mpg", "mpeg2video", {})],
)
def test_a_file_cut_after_its_last_frame_is_not_told_as_cut_short(tmp_path, name, codec, options):
    """Cut within what follows the frames (an index, tags, a program stream's padding), the file
    holds them all."""
    whole = write_video(tmp_path / name, face_frames(100), codec, container_options=options)
    data = whole.read_bytes()
    with av.open(str(whole)) as container:  # a program stream's packets state no position
        ends = [packet.pos + packet.size for packet in container.demux() if packet.size and packet.pos is not None]
    assert len(data) - max(ends, default=0) >= 8  # something follows the last frame's data
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(data[: len(data) - 2])
    sampled = read_frames(cut, 10)
    assert sampled.info.frame_count == 100 and not sampled.info.cut_short


@pytest.mark.parametrize("name, size, other", [("broadcast.ts", 188, 192), ("camcorder.m2ts", 192, 188)])
def test_a_transport_stream_is_told_cut_short_by_its_own_packet_size(tmp_path, name, size, other):
    """A transport stream's packets are 188 bytes, a camcorder's M2TS's 192: cut at a length that
    is a whole number of packets of the other size, it still ends within one of its own."""
    whole = write_video(tmp_path / name, face_frames(100), "libx264")
    data = whole.read_bytes()
    assert len(data) % size == 0 and not read_frames(whole, 10).info.cut_short
    length = next(n for n in range(len(data) * 6 // 10 // other * other, 0, -other) if n % size)
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(data[:length])
    assert read_frames(cut, 10).info.cut_short


def assert_read_as_shown_and_undamaged(cut: Path, sampled, intact, fps: int) -> None:
    """Each frame read from a cut copy of a stamped clip is the frame shown at its time (frames
    shown before the cut one may be cut off, so not its number), as the intact clip reads it; and
    the check for damage counts nothing at the last frame read."""
    for index, frame in zip(sampled.indices, sampled.frames):
        shown = round(sampled.timeline.time_s(index) * fps)
        assert read_stamp(frame) == shown
        assert np.abs(frame.astype(int) - intact.frames[intact.indices.index(shown)]).mean() < 2, index
    last = sampled.timeline.time_s(sampled.indices[-1])
    assert damaged_pictures(cut, (0.0, last), examined_s=[last]) == 0


@pytest.mark.parametrize("where", ["between two of its packets", "within its first packet"])
@pytest.mark.parametrize("name, size", [("broadcast.ts", 188), ("camcorder.m2ts", 192)])
def test_a_transport_stream_cut_is_told_by_its_last_frame(tmp_path, name, size, where):
    """A frame's data fills the transport packets it lies in but the last, which a muxer fills
    out with stuffing. Cut between two packets of its data, the file looked whole, and the frame
    was read patched over where its data stops (and a decoder's failure on it could be counted as
    damage); cut within the first packet of a frame's data, which the demuxer then passes over,
    the file was told as cut short, and the frame before it, whole, left out for the one unfinished."""
    frames = [stamp_number(frame, number) for number, frame in enumerate(face_frames(40, (320, 180)))]
    whole = write_video(tmp_path / name, frames, "libx264")
    with av.open(str(whole)) as container:
        large = [packet for packet in container.demux(container.streams.video[0]) if packet.size > 3 * size]
    first_packet = max(packet.pos for packet in large) // size * size  # where the last large frame's data begins
    length = first_packet + (2 * size if where == "between two of its packets" else size // 2)
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(whole.read_bytes()[:length])
    with av.open(str(cut)) as container:
        held = len([packet for packet in container.demux(container.streams.video[0]) if packet.size])
    intact, sampled = read_frames(whole, 80), read_frames(cut, 80)
    assert sampled.info.cut_short and sampled.undecoded == 0
    assert len(sampled.indices) == held - (where == "between two of its packets")  # all but the unfinished frame
    assert_read_as_shown_and_undamaged(cut, sampled, intact, fps=10)


def test_a_transport_stream_cut_after_a_whole_slice_of_its_last_frame_is_told(tmp_path):
    """A broadcast encoder splits each picture into slices. Cut between two transport packets
    where one of its last frame's slices ends, that frame decodes without a failure, the slices
    cut off patched over from the picture before; the decoder flags it patched, which tells the
    cut. Zeros between two of its slices, which H.264 allows, put that end at a packet's end."""
    frames = [stamp_number(frame, number) for number, frame in enumerate(face_frames(20, (320, 192)))]
    whole = write_video(tmp_path / "sliced.ts", frames, "libx264", options={"x264-params": "slices=4"})
    with av.open(str(whole)) as container:
        last = bytes([packet for packet in container.demux(container.streams.video[0]) if packet.size][-1])
    slices = [found.start() for found in re.finditer(b"\x00\x00\x01[\x01\x21\x41\x61]", last)]  # non-key slices
    padded = last[: slices[2]] + bytes(3 * 188) + last[slices[2] :]
    data = with_last_packet(whole, tmp_path / "padded.ts", padded).read_bytes()
    zeros = [at for at in range(0, len(data), 188) if data[at + 4 : at + 188] == bytes(184)]
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: zeros[-1] + 188])  # the frame's first two slices whole, and zeros
    with av.open(str(cut)) as container:
        held = len([packet for packet in container.demux(container.streams.video[0]) if packet.size])
    intact, sampled = read_frames(whole, 40), read_frames(cut, 40)
    assert sampled.info.cut_short and sampled.undecoded == 0 and held == 20
    assert len(sampled.indices) == held - 1  # all but the unfinished frame
    assert_read_as_shown_and_undamaged(cut, sampled, intact, fps=10)


@pytest.mark.parametrize("where", ["between two packs", "within a pack's start code"])
def test_a_program_stream_cut_between_packs_is_told_by_its_last_frame(tmp_path, where):
    """Nothing in an MPEG program stream's packs tells where a frame's data ends: cut between two,
    the file looked whole, and its last frame was read patched over where its data stops. It
    fails to decode, which tells the cut."""
    frames = [stamp_number(frame, number) for number, frame in enumerate(face_frames(60))]
    whole = write_video(tmp_path / "dvd.mpg", frames, "mpeg2video", fps=25)
    data = whole.read_bytes()
    packs = [found.start() for found in re.finditer(b"\x00\x00\x01\xba", data)]
    cut = tmp_path / "cut-dvd.mpg"
    cut.write_bytes(data[: packs[len(packs) * 2 // 3] + (2 if where == "within a pack's start code" else 0)])
    with av.open(str(cut)) as container:
        held = len([packet for packet in container.demux(container.streams.video[0]) if packet.size])
    intact, sampled = read_frames(whole, 120), read_frames(cut, 120)
    assert sampled.info.cut_short and sampled.undecoded == 0 and 20 < held < 60
    assert len(sampled.indices) == held - 1  # all but the unfinished frame
    assert_read_as_shown_and_undamaged(cut, sampled, intact, fps=25)


def test_a_program_stream_cut_within_its_sound_keeps_its_last_frame_whole(tmp_path):
    """Cut within a sound packet that follows its last frame's data, a camcorder's MPEG program
    stream holds that frame whole: it is read, no longer left out for one unfinished."""
    frames = [stamp_number(frame, number) for number, frame in enumerate(face_frames(40))]
    whole = write_with_silence(tmp_path / "camcorder.mpg", frames, "mpeg2video", fps=25, sound_codec="mp2")
    with av.open(str(whole)) as container:
        packets = [(packet.stream.type, packet.pos, packet.size) for packet in container.demux() if packet.size and packet.pos is not None]
    video_end = max(at + size for kind, at, size in packets if kind == "video")
    _, at, size = max(packet for packet in packets if packet[0] == "audio")
    assert at > video_end
    cut = tmp_path / "cut-camcorder.mpg"
    cut.write_bytes(whole.read_bytes()[: at + size // 2])
    sampled = read_frames(cut, 80)
    assert sampled.info.cut_short and sampled.undecoded == 0 and len(sampled.indices) == 40
    assert [read_stamp(frame) for frame in sampled.frames] == list(range(40))


@pytest.mark.parametrize("within", ["the last packet", "the frame shown last"])  # B-frames follow it, or are cut off
@pytest.mark.parametrize(
    "name, codec, pix_fmt, options",
    [
        ("web.mp4", "libx264", "yuv420p", {"movflags": "+faststart"}),
        ("broadcast.ts", "libx264", "yuv420p", {}),  # FFmpeg flags it not
        ("old.flv", "flv", "yuv420p", {}),
        ("stream.flv", "libx264", "yuv420p", {}),
        ("camera.avi", "mjpeg", "yuvj420p", {}),
        ("dvd.mpg", "mpeg2video", "yuv420p", {}),
        ("anim.gif", "gif", "rgb8", {}),
    ],
)
def test_the_frame_a_file_cut_short_ends_within_is_not_examined(tmp_path, name, codec, pix_fmt, options, within):
    """A decoder gives the frame whose data the file ends within patched over below where the
    data stops, or an earlier picture again, or fails where it holds frames shown before it back:
    it is left out of the frames read, every frame read is the one its time says, and no frame is
    counted as undecoded."""
    frames = [stamp_number(frame, number) for number, frame in enumerate(face_frames(40, (320, 180)))]
    whole = write_video(tmp_path / name, frames, codec, pix_fmt=pix_fmt, container_options=options)
    with av.open(str(whole)) as container:
        packets = [packet for packet in container.demux(container.streams.video[0]) if packet.size]
    placed = [packet for packet in packets if packet.pos is not None]  # a program stream's may state none
    cut_packet = max(placed, key=lambda packet: packet.pos if within == "the last packet" else packet.pts)
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(whole.read_bytes()[: cut_packet.pos + cut_packet.size // 3])
    sizes = {packet.pts: packet.size for packet in packets}
    with av.open(str(cut)) as container:
        held = {packet.pts: packet.size for packet in container.demux(container.streams.video[0]) if packet.size}
    [unfinished] = [index for index, time in enumerate(sorted(held)) if held[time] < sizes.get(time, 0)]
    intact = read_frames(whole, 80)  # every frame: 40 slices over the time of 38 frames may pass one over
    sampled = read_frames(cut, 80)
    assert sampled.info.cut_short and unfinished not in sampled.indices and len(sampled.indices) >= 36
    assert sampled.undecoded == 0  # not damage: the file is told as cut short
    for index, frame in zip(sampled.indices, sampled.frames):
        assert read_stamp(frame) == index
        assert np.abs(frame.astype(int) - intact.frames[intact.indices.index(index)]).mean() < 2, index


@pytest.mark.parametrize("name, options", [("web.mp4", {"movflags": "+faststart"}), ("screen.mp4", {"movflags": "frag_keyframe+empty_moov"})])
def test_a_frame_cut_within_its_first_bytes_is_not_taken_for_zeros(tmp_path, name, options):
    """An H.264 frame's data in an MP4 begins with its length, whose first bytes are zeros: cut
    there, the frame reads as zeros, as a part a download never got would. The file is cut short,
    not damaged."""
    whole = write_video(tmp_path / name, face_frames(40, (320, 180)), "libx264", container_options=options)
    with av.open(str(whole)) as container:
        cut_packet = max((packet for packet in container.demux(container.streams.video[0]) if packet.size), key=lambda packet: packet.pos)
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(whole.read_bytes()[: cut_packet.pos + 2])
    sampled = read_frames(cut, 80)
    assert sampled.info.cut_short and sampled.undecoded == 0 and len(sampled.indices) >= 36


@pytest.mark.parametrize("seek_min_gap", [10**9, 1])
@pytest.mark.parametrize("second_size, second_options", [((480, 270), {}), ((960, 540), {"max_delay": "25000"})])
def test_recordings_joined_end_to_end_are_read_to_the_end_of_the_last(tmp_path, seek_min_gap, second_size, second_options):
    """Transport streams joined as they are (`cat a.ts b.ts`, a recorder's split files) each time
    their frames from zero: the header's length was the first recording's, and the second went
    unseen (the reader stopped at frame 39 of 80). Also where the second has a size of its own,
    and its frames' times fall between the first's rather than on them (the muxer's `max_delay`
    starts them half a frame later)."""
    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(80, (480, 270)))]
    first = write_h264(tmp_path / "first.ts", frames[:40])
    second = write_video(
        tmp_path / "second.ts", [cv2.resize(frame, second_size) for frame in frames[40:]], "libx264", container_options=second_options
    )
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    sampled = read_frames(joined, 8, seek_min_gap=seek_min_gap)
    assert sampled.info.frame_count == 80 and sampled.timeline.duration_s == pytest.approx(8.0)
    assert sampled.indices == sample_indices(80, 8)
    assert [read_stamp(cv2.resize(frame, (480, 270))) for frame in sampled.frames] == sampled.indices
    # a part across the two, decoded up to rather than seeked: a seek by time lands in either
    part = read_frames(joined, 4, seek_min_gap=seek_min_gap, part=TimeRange(2.0, 6.0))
    assert part.span == (20, 60) and [read_stamp(cv2.resize(frame, (480, 270))) for frame in part.frames] == part.indices


@pytest.mark.parametrize("stream", ["transport_stream", "interlaced_transport_stream"])
@pytest.mark.parametrize("seek_min_gap, part", [(1, TimeRange()), (30, TimeRange(20.0, 24.0))])
def test_frames_sought_in_a_transport_stream_are_the_frames_asked_for(request, stream, seek_min_gap, part):
    """A transport stream has no index: OpenCV's seek to a frame before its second key frame
    landed on frame 251 and took it for the one asked for, so that a part from 20 s to 24 s,
    decoded on from a seek to its first frame, was read from 25 s to 28 s. PyAV's, which reads
    interlaced ones, landed on the key frame after the one before the wanted frame."""
    sampled = read_frames(request.getfixturevalue(stream), 6, seek_min_gap=seek_min_gap, part=part)
    assert sampled.method == ("seek" if seek_min_gap == 1 else "sequential") and len(sampled.frames) == 6
    assert [read_stamp(frame) for frame in sampled.frames] == [index % 256 for index in sampled.indices]


@pytest.mark.parametrize(
    "stream, indices, keys_known",
    [
        ("transport_stream", (100, 0, 299, 249, 250, 120), True),
        ("transport_stream", (100, 0, 299, 249, 250, 120), False),
        ("program_stream", range(300), True),
    ],
)
def test_pyav_seeks_to_the_frame_asked_for_in_a_file_with_no_index(request, monkeypatch, stream, indices, keys_known):
    """FFmpeg's seek by time into an MPEG transport stream landed on the key frame after the one
    before the wanted frame (250 for 100), or past the last packet (nothing for 299); where the
    packets do not tell the key frames' decoding times to seek to, it is tried again from further
    back. In a program stream, sought by the key frame's decoding time, the key frame was timed
    as the frame after it, and taken for it (120 for 121)."""
    import model.decoders as decoders

    if not keys_known:
        read_main_stream = decoders.read_main_stream
        monkeypatch.setattr(decoders, "read_main_stream", lambda container: read_main_stream(container)._replace(keys=np.empty((0, 2), dtype=np.int64)))
    capture = PyAVCapture(request.getfixturevalue(stream))
    for index in indices:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        assert ok and read_stamp(frame) == index % 256
    capture.release()


@pytest.mark.parametrize(
    "codec, params, sought",
    [
        ("libx264", "", False),  # one closed group of pictures (a key frame each 250 frames)
        ("libx264", "keyint=30", True),
        ("libx264", "keyint=30:open-gop=1", False),  # key frames that are recovery points, not IDR pictures
        ("libx265", "keyint=30:open-gop=0", True),
        ("libx265", "keyint=30", True),  # CRA pictures: open groups
    ],
)
@pytest.mark.parametrize("part", [TimeRange(), TimeRange(2.0, 6.0)])
def test_a_raw_stream_is_counted_from_its_packets_and_sought_by_its_groups_of_pictures(tmp_path, counted_without_decoding, codec, params, sought, part):
    """Raw H.264 and HEVC, as CCTV recorders and dashcams export them, have no times to seek by:
    OpenCV's seek moved nowhere and said it did, so that each frame read was taken for one
    further on (frame 0 for 16, or for the first of the part). They were then decoded whole
    twice, once to count their frames. Their packets, one a frame, now count them, and a frame
    is decoded from the first byte of its group of pictures. An open group's key frame (an HEVC
    CRA picture) is shown after leading pictures that a decoder started there leaves out; it
    gave frames up to four further on where they were not counted. An H.264 recovery point's
    leading pictures cannot be told from their NAL units: such a stream is read in one pass."""
    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(200, (320, 180)))]
    params_option = {"x264-params" if codec == "libx264" else "x265-params": params} if params else {}
    path = write_video(tmp_path / ("camera.h264" if codec == "libx264" else "camera.hevc"), frames, codec, options=params_option)
    assert probe_video(path).frame_count == 200  # as an upload is checked, so that a part past its end is refused then
    sampled = read_frames(path, 6, seek_min_gap=1, part=part)
    assert sampled.info.frame_count == 200 and sampled.method == ("seek" if sought else "sequential") and len(sampled.frames) == 6
    assert [read_stamp(frame) for frame in sampled.frames] == sampled.indices
    assert damaged_pictures(path, sampled.span_s) == 0  # nor is any picture taken for damaged


@pytest.mark.parametrize("reader", ["opencv", "pyav"])
def test_a_frame_that_does_not_decode_does_not_end_the_video(tmp_path, reader):
    """A damaged file's frame that cannot be decoded at all fails alone: the frames after it are
    read and the video keeps its length (read as the end, the frames before it were taken for
    the whole video). The frames after it show what the decoder patched together without it,
    so only those before it can be told by the number on them. The frame that fails, one of those
    wanted here, is not read but counted: another picture stood in for it."""
    import model.video as video

    frames = (stamp_number(frame, i) for i, frame in enumerate(face_frames(40)))
    intact = write_h264(tmp_path / "intact.mp4", frames)
    broken = undecodable_frame_copy(intact, tmp_path / "broken.mp4", packet=10)
    open_capture = {"opencv": open_with_opencv, "pyav": PyAVCapture}[reader]
    capture = open_capture(broken)
    grabbed = [capture.grab() for _ in range(40 + FAILED_GRABS_AT_THE_END)]
    capture.release()
    failed = grabbed.index(False)
    assert grabbed.count(False) == 1 + FAILED_GRABS_AT_THE_END and 0 < failed < 39  # one frame fails, then the end
    with av.open(str(broken)) as container:
        packets = [packet for packet in container.demux(container.streams.video[0]) if packet.size]
    shown_failing = sorted(packet.pts for packet in packets).index(packets[10].pts)
    sampled = video._sample(broken, 20, 10**9, None, video.MAX_FRAME_SIDE, TimeRange(), open_capture)
    wanted = video._sample(intact, 20, 10**9, None, video.MAX_FRAME_SIDE, TimeRange(), open_capture).indices
    assert sampled.info.frame_count == 40 and sampled.info.duration_s == pytest.approx(4.0)
    assert shown_failing in wanted and sampled.indices == [index for index in wanted if index != shown_failing]
    assert sampled.undecoded == 1 and sampled.indices[-1] == 39
    before = [(index, frame) for index, frame in zip(sampled.indices, sampled.frames) if index < failed]
    assert len(before) >= 3 and [read_stamp(frame) for _, frame in before] == [index for index, _ in before]


@pytest.mark.parametrize("reader", ["opencv", "pyav"])
@pytest.mark.parametrize("last_zeroed, intact_from", [(44, 50), (64, 70)])  # under and over FAILED_GRABS_AT_THE_END
def test_frames_after_a_stretch_that_does_not_decode_are_read_where_they_are_shown(tmp_path, reader, last_zeroed, intact_from):
    """Frames 30 to `last_zeroed` are zeros: OpenCV passes over some unseen, and fails on
    others; the rest of the video is read all the same, each frame where it is shown, and the
    video keeps its length."""
    import model.video as video

    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(90))]
    intact = write_key_every_10(tmp_path / "intact.mp4", frames)
    holed = zeroed_stretch_copy(intact, tmp_path / "holed.mp4", 30, last_zeroed)
    open_capture = {"opencv": open_with_opencv, "pyav": PyAVCapture}[reader]
    sampled = video._sample(holed, 90, 10**9, None, video.MAX_FRAME_SIDE, TimeRange(), open_capture)
    assert sampled.info.frame_count == 90 and sampled.info.duration_s == pytest.approx(9.0)
    assert sampled.undecoded >= last_zeroed + 1 - 30  # at least the zeroed frames
    # the frames of groups of pictures the zeros left whole (a frame after them but before the
    # next key frame is patched over from an earlier picture, but shown at its own time)
    whole = [(index, frame) for index, frame in zip(sampled.indices, sampled.frames) if index < 30 or index >= intact_from]
    assert [read_stamp(frame) for _, frame in whole] == [index for index, _ in whole]
    assert sum(index >= intact_from for index, _ in whole) == 90 - intact_from


@pytest.mark.parametrize("reader", ["opencv", "pyav"])
@pytest.mark.parametrize("seek_min_gap", [1, 10**9], ids=["seeking", "in-one-pass"])
def test_frames_a_stretch_of_zeros_spoils_are_left_out_and_told(tmp_path, reader, seek_min_gap):
    """Frames 30 to 44 (in decoding order) are zeros, as an unfinished download leaves them, and
    the rest of their groups of pictures, up to the key frame at 50, refer to what they lost: a
    decoder patches those over from an earlier picture. None of them is read as if the video
    showed it there, whether the video is read by seeking or in one pass; every other frame
    chosen is read where it is shown, and the frames spoiled are told."""
    import model.video as video

    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(90))]
    intact = write_key_every_10(tmp_path / "intact.mp4", frames)
    holed = zeroed_stretch_copy(intact, tmp_path / "holed.mp4", 30, 44)
    open_capture = {"opencv": open_with_opencv, "pyav": PyAVCapture}[reader]
    whole = video._sample(intact, 30, seek_min_gap, None, video.MAX_FRAME_SIDE, TimeRange(), open_capture)
    sampled = video._sample(holed, 30, seek_min_gap, None, video.MAX_FRAME_SIDE, TimeRange(), open_capture)
    assert whole.undecoded == 0 and len(whole.indices) == 30
    assert sampled.method == whole.method == ("seek" if seek_min_gap == 1 else "sequential")
    assert sampled.indices == [index for index in whole.indices if not 30 <= index < 50]
    assert [read_stamp(frame) for frame in sampled.frames] == sampled.indices
    assert sampled.undecoded == 20 and sampled.info.frame_count == 90


@pytest.mark.parametrize(
    "name, codec", [("clip.webm", "libvpx-vp9"), ("clip.mkv", "libx264"), ("clip.ts", "libx264"), ("broadcast.ts", "mpeg2video")]
)
def test_frames_lost_where_a_demuxer_passes_over_zeros_are_told(tmp_path, name, codec):
    """In Matroska, WebM or an MPEG transport stream, zeros where a download never got a part
    leave no packet to find: the demuxer passes over them, to the next cluster or the next packet
    (a transport stream's looks 64 KiB at a time, and asks to be called again after each: PyAV's
    reading of the packets had stopped there, and the frames were then counted and timed by
    OpenCV's, which missed those lost). The frames after them are read where they are shown, the
    video keeps its length, and the frames lost are told, at least those zeroed."""
    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(120))]
    intact = write_video(tmp_path / name, frames, codec, options={"g": "10"})
    holed = zeroed_stretch_copy(intact, tmp_path / f"holed-{name}", 40, 70)
    whole, sampled = read_frames(intact, 40), read_frames(holed, 40)
    assert whole.undecoded == 0 and len(whole.indices) == 40
    assert sampled.undecoded >= 31 and sampled.info.duration_s == pytest.approx(whole.info.duration_s)
    shown = [round(sampled.timeline.time_s(index) * 10) for index in sampled.indices]
    assert [read_stamp(frame) for frame in sampled.frames] == shown and shown[-1] >= 115


@pytest.mark.parametrize(
    "name, codec, stated_s",
    [
        ("clip.webm", "libvpx-vp9", 12.0),
        ("clip.mkv", "libx264", 12.0),
        ("clip.ts", "libx264", None),
        ("clip.m2ts", "libx264", None),
    ],
)
def test_zeros_at_the_end_of_a_file_whose_demuxer_passes_over_them_tell_it_cut_short(tmp_path, name, codec, stated_s):
    """Where a download written in parts never got its end, zeros follow the last packet, and the
    demuxer finds the end of the file in them: the file is told as ending early, where zeros take
    the place of its data (its stated length compared, where it states one, however little it
    runs past the last frame held: here a second of 12)."""
    frames = face_frames(120, (320, 180))
    intact = write_video(tmp_path / name, frames, codec, options={"g": "10"})
    whole = read_frames(intact, 20)
    assert not (whole.info.cut_short or whole.info.ends_in_zeros) and whole.info.duration_s == pytest.approx(12.0)
    sampled = read_frames(zeroed_stretch_copy(intact, tmp_path / f"zeros-{name}", 110, 119), 20)
    assert sampled.info.cut_short and sampled.info.ends_in_zeros and sampled.info.duration_s == pytest.approx(11.0)
    assert sampled.info.stated_duration_s == (None if stated_s is None else pytest.approx(stated_s))
    assert len(sampled.frames) == 20 and sampled.undecoded == 0


@pytest.mark.parametrize("name, codec", [("clip.mkv", "libx264"), ("clip.webm", "libvpx-vp9")])
def test_the_frame_that_zeros_at_the_end_of_a_file_begin_within_is_unfinished(tmp_path, name, codec):
    """Where the part a download never got begins within a frame's data, the demuxer gives that
    frame whole, zeros and all: it is neither examined nor counted as damage, as a file cut
    within a frame's data."""
    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(120, (320, 180)))]
    intact = write_video(tmp_path / name, frames, codec, options={"g": "10"})
    with av.open(str(intact)) as container:
        hundredth = [packet for packet in container.demux(container.streams.video[0]) if packet.size][100]
    data = intact.read_bytes()
    zeros_from = hundredth.pos + hundredth.size // 2
    holed = tmp_path / f"zeros-{name}"
    holed.write_bytes(data[:zeros_from] + bytes(len(data) - zeros_from))
    sampled = read_frames(holed, 120)
    assert sampled.info.cut_short and sampled.info.ends_in_zeros
    assert sampled.indices == list(range(100)) and read_stamp(sampled.frames[-1]) == 99
    examined_s = [sampled.timeline.time_s(index) for index in sampled.indices]
    assert damaged_pictures(holed, sampled.span_s, examined_s=examined_s) == 0


@pytest.mark.parametrize("name", ["clip.ts", "clip.m2ts"])
@pytest.mark.parametrize("within", ["its data", "the stuffing that ends it"])
def test_the_frame_that_zeros_at_the_end_of_a_transport_stream_begin_within_is_unfinished(tmp_path, name, within):
    """Where the part a download never got begins within a frame's data, or within the transport
    packet that ends it, which stuffing fills out, the demuxer gives what the packets hold, zeros
    and all: the frame is neither examined nor counted as damage. The zeros run on past the
    file's length (a bigger file's first part), more of them than the end looked through for
    the frame's last packets."""
    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(120, (320, 180)))]
    intact = write_video(tmp_path / name, frames, "libx264", options={"g": "10"})
    with av.open(str(intact)) as container:
        stream = container.streams.video[0]
        pid, packets = stream.id, [packet for packet in container.demux(stream) if packet.size]
    data, size = intact.read_bytes(), 192 if name.endswith(".m2ts") else 188
    if within == "its data":
        zeros_from = packets[100].pos + packets[100].size // 2
    else:  # the hundredth frame's last transport packet, each beginning with a sync byte (0x47)
        syncs = range(size - 188, packets[101].pos, size)  # an M2TS's 4 bytes before each
        last = [at for at in syncs if data[at] == 0x47 and ((data[at + 1] & 0x1F) << 8 | data[at + 2]) == pid][-1]
        assert data[last + 3] & 0x30 == 0x30  # an adaptation field (the stuffing), then the payload
        zeros_from = last + 188 - 20
    zeros = len(data) - zeros_from + (TS_TAIL_BYTES // size + 1) * size
    holed = tmp_path / f"zeros-{name}"
    holed.write_bytes(data[:zeros_from] + bytes(zeros))
    sampled = read_frames(holed, 120)
    assert sampled.info.cut_short and sampled.info.ends_in_zeros
    assert sampled.indices == list(range(100)) and read_stamp(sampled.frames[-1]) == 99
    examined_s = [sampled.timeline.time_s(index) for index in sampled.indices]
    assert damaged_pictures(holed, sampled.span_s, examined_s=examined_s) == 0


def test_the_check_of_the_last_picture_reads_no_further_than_the_first_of_the_zeros_a_file_ends_in(tmp_path, monkeypatch):
    """A transport stream's demuxer gives its last frame only once it has searched the zeros after
    it for another packet (seconds in hundreds of megabytes of them): the check that the last
    picture decodes reads the file as far as their first bytes, and tells the same."""
    import model.container as container

    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(120, (320, 180)))]
    intact = write_video(tmp_path / "clip.ts", frames, "libx264", options={"g": "10"})
    with av.open(str(intact)) as opened:
        hundredth = [packet for packet in opened.demux(opened.streams.video[0]) if packet.size][100]
    data, zeros_from = intact.read_bytes(), hundredth.pos + hundredth.size // 2
    holed = tmp_path / "zeros.ts"
    holed.write_bytes(data[:zeros_from] + bytes(len(data) - zeros_from + 188 * 50_000))  # 9 MB more
    furthest = []
    read_whole = container._FilePrefix.readinto

    def read_and_note(prefix, buffer):
        read = read_whole(prefix, buffer)
        furthest.append(prefix.tell())
        return read

    monkeypatch.setattr(container._FilePrefix, "readinto", read_and_note)
    facts = container_facts(holed)
    assert facts.cut_short and facts.ends_in_zeros and len(facts.shown_s) == 101 and facts.unfinished == 100
    assert furthest and max(furthest) <= zeros_from + MIN_LOST_BYTES


def test_silent_sound_between_frames_is_not_taken_for_zeros_left_by_a_download(tmp_path):
    """A silent PCM track's samples are zeros, kilobytes of them between one frame and the next."""
    path = write_with_silence(tmp_path / "silent.mkv", face_frames(30), "libx264")
    sampled = read_frames(path, 30)
    assert sampled.undecoded == 0 and len(sampled.indices) == 30


def test_black_frames_of_uncompressed_video_are_not_taken_for_zeros_left_by_a_download(tmp_path):
    """An uncompressed black frame's data is all zeros, as a stretch an unfinished download
    never filled in is; it is a frame of the video all the same, and read."""
    import model.video as video

    frames = [np.zeros_like(frame) if 5 <= i < 10 else frame for i, frame in enumerate(face_frames(20, (320, 180)))]
    path = write_video(tmp_path / "raw.avi", frames, "rawvideo", pix_fmt="rgb24")
    sampled = video._sample(path, 20, 10**9, None, video.MAX_FRAME_SIDE, TimeRange(), open_with_opencv)
    assert sampled.indices == list(range(20)) and sampled.undecoded == 0
    assert all(sampled.frames[i].max() == 0 for i in range(5, 10))


GROUPS_OF_PICTURES = [  # name, codec, its parameters
    ("clip.mp4", "libx264", ""),  # one group of pictures
    ("open.mp4", "libx264", "keyint=30:open-gop=1"),  # key frames that are recovery points, not IDR pictures
    ("phone.mp4", "libx265", "keyint=30:log-level=error"),  # CRA pictures: open groups
]
WHOLE, PART = (0.0, 20.0), (3.3, 6.5)  # of 200 frames at 10 a second; the part sought into at a key frame 3 s in
EXAMINED = {WHOLE: [1.0, 3.3, 6.1, 12.4, 19.9], PART: [3.3, 4.2, 6.4]}  # looked at first, each from the key frame before it


def write_groups_of_pictures(folder: Path, name: str, codec: str, params: str) -> Path:
    options = {"x264-params" if codec == "libx264" else "x265-params": params} if params else {}
    return write_video(folder / name, face_frames(200, (320, 180)), codec, options=options)


@pytest.mark.parametrize("name, codec, params", GROUPS_OF_PICTURES)
def test_pictures_that_do_not_decode_cleanly_are_counted(tmp_path, name, codec, params):
    """Broken data in a file (bytes overwritten in its media data) is found in the pictures it
    breaks, which a player, and OpenCV, patch over unseen; an intact file has none, whether it
    is decoded from the start or from the key frame before a part, where an open group's
    pictures refer to the group before and cannot be decoded."""
    intact = write_groups_of_pictures(tmp_path, name, codec, params)
    for span in (WHOLE, PART):
        assert damaged_pictures(intact, span) == 0 and damaged_pictures(intact, span, examined_s=EXAMINED[span]) == 0
    damaged = damaged_copy(intact, tmp_path / f"damaged-{name}", count=20)
    assert damaged_pictures(damaged, WHOLE) > 0 and damaged_pictures(damaged, WHOLE, examined_s=EXAMINED[WHOLE]) > 0
    stopped = threading.Event()
    stopped.set()
    assert damaged_pictures(damaged, WHOLE, stopped) == 0  # not looked for once stopped


@pytest.mark.parametrize("name, codec, params", GROUPS_OF_PICTURES)
def test_the_look_at_the_frames_examined_says_when_it_has_found_damage(tmp_path, name, codec, params):
    """A caller waits longer for a look that has found a damaged picture (which frames examined
    it spoils depends on how far the look gets): the look says so, and says nothing of an intact file."""
    intact = write_groups_of_pictures(tmp_path, name, codec, params)
    damaged = damaged_copy(intact, tmp_path / f"damaged-{name}", count=20)
    for path, is_damaged in ((intact, False), (damaged, True)):
        seen = threading.Event()
        damage = check_damage(path, (0.0, 0.0), examined_s=EXAMINED[WHOLE], damage_seen=seen)  # that look alone
        assert seen.is_set() == is_damaged == (damage.pictures > 0)


@pytest.mark.parametrize(
    "name, codec, pix_fmt",
    [
        ("tiff.mov", "tiff", "rgb24"),  # FFmpeg's strict checks reject a tag its own encoder writes
        ("png.mov", "png", "rgb24"),
        ("prores.mov", "prores_ks", "yuv422p10le"),
        ("ffv1.mkv", "ffv1", "yuv420p"),
        ("mjpeg.avi", "mjpeg", "yuvj420p"),
    ],
)
def test_an_intact_video_of_pictures_each_coded_alone_has_none_damaged(tmp_path, name, codec, pix_fmt):
    intact = write_video(tmp_path / name, face_frames(20, (320, 180)), codec, pix_fmt=pix_fmt)
    assert damaged_pictures(intact, (0.0, 2.0)) == 0 and damaged_pictures(intact, (0.0, 2.0), examined_s=[0.5, 1.4]) == 0


@pytest.mark.parametrize("name, codec, params", GROUPS_OF_PICTURES)
def test_a_group_of_pictures_too_large_to_hold_is_checked_as_it_comes(tmp_path, monkeypatch, name, codec, params):
    """The frames examined are looked at first, each from the key frame before it; a group of
    pictures of more than GROUP_BYTES_HELD is then decoded as it comes and its packets let go (a
    video with one key frame in minutes is not held whole). An intact file still has no
    damaged picture, from the start or from a key frame sought; a damaged one still has some."""
    import model.damage as damage

    limit = 20_000  # two key frames of these clips and the pictures after them
    monkeypatch.setattr(damage, "GROUP_BYTES_HELD", limit)
    held = []  # the bytes of the packets held, after each is added
    add = damage._ExaminedGroups.add

    def add_and_weigh(groups, packet):
        add(groups, packet)
        held.append(sum(packet.size for packet in [*groups._before, *groups._group]))

    monkeypatch.setattr(damage._ExaminedGroups, "add", add_and_weigh)
    intact = write_groups_of_pictures(tmp_path, name, codec, params)
    damaged = damaged_copy(intact, tmp_path / f"damaged-{name}", count=20)
    for span in (WHOLE, PART):  # the first look alone: a span that ends where it starts
        assert damaged_pictures(intact, (span[0], span[0]), examined_s=EXAMINED[span]) == 0
    assert damaged_pictures(damaged, (0.0, 0.0), examined_s=EXAMINED[WHOLE]) > 0
    with av.open(str(intact)) as opened:
        largest = max(packet.size for packet in opened.demux(opened.streams.video[0]))
    assert held and max(held) <= 2 * (limit + largest)  # a group and the one before it, at most

def test_the_frames_examined_are_checked_for_damage_first_and_whole(tmp_path):
    """The look over the whole span leaves out the pictures that no other refers to, whose damage
    spoils themselves alone; not where such a picture is a frame examined. The frames examined
    are looked at first, each with the pictures it rests on, and only those: to the end once the
    look over the whole span is stopped, not once the check is abandoned."""
    intact = write_h264(tmp_path / "clip.mp4", face_frames(60, (320, 180)))  # one group of pictures, with B-frames
    damaged, shown_s = damaged_unreferenced_picture_copy(intact, tmp_path / "damaged.mp4")
    whole = (0.0, 6.0)
    assert damaged_pictures(damaged, whole) == 0
    assert damaged_pictures(damaged, whole, examined_s=[1.0, shown_s]) == 1
    assert damaged_pictures(damaged, whole, examined_s=[1.0, shown_s - 1.0]) == 0  # no frame examined rests on it
    assert damaged_pictures(damaged, whole, examined_s=[1.0, shown_s + 0.5]) == 0  # nor the later one, decoded past it
    assert damaged_pictures(intact, whole, examined_s=[1.0, shown_s]) == 0
    stopped = threading.Event()
    stopped.set()
    assert damaged_pictures(damaged, whole, stopped, examined_s=[shown_s]) == 1
    assert damaged_pictures(damaged, whole, examined_s=[shown_s], abandon=stopped) == 0  # not looked for once abandoned


def test_a_stream_that_appears_mid_file_is_passed_over(tmp_path):
    """PyAV lists the streams found on opening, and failed (IndexError) once it had given the
    packets of a file where another turns up later; the video is read to its end all the same."""
    import model.video as video

    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(100))]
    path = late_stream_flv_copy(write_video(tmp_path / "clip.flv", frames, "flv1"), tmp_path / "late.flv")
    sampled = read_frames(path, 20)
    assert sampled.info.frame_count == 99 and [read_stamp(frame) for frame in sampled.frames] == sampled.indices
    by_pyav = video._sample(path, 20, 10**9, None, video.MAX_FRAME_SIDE, TimeRange(), PyAVCapture)
    assert by_pyav.indices == sampled.indices and [read_stamp(frame) for frame in by_pyav.frames] == by_pyav.indices
    examined_s = [sampled.timeline.time_s(index) for index in sampled.indices]
    assert damaged_pictures(path, sampled.span_s, examined_s=examined_s) == 0


def test_a_picture_that_changes_size_mid_way_is_read_at_its_first_size(tmp_path):
    """As a browser's recording does when its bandwidth changes (here two streams joined): PyAV
    gave each frame at its own size, which left the search for a picture over a blurred copy of
    itself comparing frames of two sizes (ZeroDivisionError); OpenCV gives them at the first."""
    import model.video as video

    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(40))]
    large = write_h264(tmp_path / "large.h264", frames[:20])
    small = write_h264(tmp_path / "small.h264", [cv2.resize(frame, (480, 270)) for frame in frames[20:]])
    joined = tmp_path / "joined.h264"
    joined.write_bytes(large.read_bytes() + small.read_bytes())
    for opener in (open_with_opencv, PyAVCapture):
        sampled = video._sample(joined, 10, 10**9, None, video.MAX_FRAME_SIDE, TimeRange(), opener)
        assert {frame.shape for frame in sampled.frames} == {(360, 640, 3)}, opener
        assert (sampled.info.width, sampled.info.height) == (640, 360)
        assert [read_stamp(frame) for frame in sampled.frames] == sampled.indices
    assert picture_region(sampled.frames) is None

def test_an_mpeg_program_stream_is_read_to_its_last_frame(tmp_path):
    """Its header's count is its duration times its rate, which left out the last frame (14 of 15)."""
    frames = [stamp_number(frame, i) for i, frame in enumerate(face_frames(15))]
    path = write_video(tmp_path / "clip.mpg", frames, "mpeg1video", fps=25)
    sampled = read_frames(path, 15)
    assert sampled.info.frame_count == 15 and sampled.indices == list(range(15))
    assert [read_stamp(frame) for frame in sampled.frames] == sampled.indices


@pytest.mark.parametrize("name", ["photo.jpg", "photo.png", "photo.webp", "photo-named-like-a-video.mp4"])
def test_a_photo_is_not_taken_for_a_one_frame_video(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(cv2.imencode(path.suffix if path.suffix != ".mp4" else ".jpg", face_frames(1)[0][..., ::-1])[1].tobytes())
    for read in (probe_video, lambda path: read_frames(path, 10)):
        with pytest.raises(VideoError, match="single picture"):
            read(path)


def mp4_box(kind: bytes, content: bytes) -> bytes:
    return (8 + len(content)).to_bytes(4, "big") + kind + content


def test_an_mp4_recording_without_its_index_is_refused_saying_so(tmp_path):
    """An MP4 whose index (moov) comes after its frames' data, cut before it (a download stopped
    early), or a camera's recording stopped before it was saved (its media data's size 0: up to
    the end of the file), cannot be opened: the refusal says why. A file that holds its index,
    or a picture's items (HEIF), is not taken for one."""
    whole = write_h264(tmp_path / "whole.mp4", face_frames(20))
    data = whole.read_bytes()
    media_data, index = data.find(b"mdat") - 4, data.find(b"moov") - 4
    assert 0 < media_data < index  # the index last
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: (media_data + index) // 2])
    recording = tmp_path / "recording.mp4"
    recording.write_bytes(data[:media_data] + bytes(4) + data[media_data + 4 : index])
    for path in (cut, recording):
        for read in (probe_video, lambda path: read_frames(path, 10)):
            with pytest.raises(IndexMissing, match="video but not their index"):
                read(path)
    assert probe_video(whole).frame_count == 20 and not mp4_index_missing(whole)
    picture = tmp_path / "picture.heic"
    picture.write_bytes(mp4_box(b"ftyp", b"heic\0\0\0\0mif1heic") + mp4_box(b"meta", bytes(64)) + mp4_box(b"mdat", bytes(256)))
    assert not mp4_index_missing(picture)
    notes = tmp_path / "notes.mp4"
    notes.write_text("These are plain notes, not a video.\n" * 50)
    with pytest.raises(VideoError) as refused:
        probe_video(notes)
    assert not isinstance(refused.value, IndexMissing)


def test_an_animated_webp_is_read_over_its_frames_own_times(tmp_path):
    # FFmpeg reads still WebP alone: these are stickers, and what GIF sites serve in place of GIFs
    frames = [stamp_number(frame, number) for number, frame in enumerate(face_frames(20, (400, 240)))]
    durations = [50] * 10 + [200] * 10  # 0.5 s, then 2 s: the frame rate varies, as in most such files
    clip = write_animated_webp(tmp_path / "sticker.webp", frames, durations)
    info = probe_video(clip)
    assert (info.width, info.height, info.frame_count) == (400, 240, 20) and info.duration_s == pytest.approx(2.5)
    sampled = read_frames(clip, 5)
    assert sampled.info.codec == "webp" and sampled.timeline.duration_s == pytest.approx(2.5)
    assert sampled.indices == [5, 11, 13, 16, 18]  # the frames on show at 0.25 s, 0.75 s, … 2.25 s
    assert [read_stamp(frame) for frame in sampled.frames] == sampled.indices
    for index, frame in zip(sampled.indices, sampled.frames):  # each frame drawn whole over the last
        assert np.abs(frame.astype(int) - frames[index]).mean() < 1
    seeking = read_frames(clip, 3, seek_min_gap=1, part=TimeRange(1.0, 2.5))
    assert seeking.method == "seek" and [read_stamp(frame) for frame in seeking.frames] == seeking.indices == [13, 16, 18]


def test_an_animated_webp_is_shown_over_white_and_frames_that_claim_no_time_last_a_tenth(tmp_path):
    frames = [np.dstack([frame, np.full(frame.shape[:2], 255, np.uint8)]) for frame in face_frames(4, (400, 240))]
    for frame in frames:
        frame[:, :40, 3] = 0  # a sticker's transparent margin
    clip = write_animated_webp(tmp_path / "sticker.webp", frames, [0, 0, 0, 0])
    sampled = read_frames(clip, 4)
    assert sampled.timeline.duration_s == pytest.approx(4 * PICTURE_FRAME_MS / 1000)
    assert (sampled.frames[0][:, :40] == 255).all() and np.abs(sampled.frames[0][:, 40:].astype(int) - frames[0][:, 40:, :3]).mean() < 1


def test_an_animated_webp_cut_short_is_read_over_the_frames_it_holds_whole(tmp_path):
    """libwebp reads none of a file that ends before the length its header states, as an
    unfinished download leaves it: the frames it holds whole are read, and it is told as cut
    short. Bytes after that length are not the picture's. Cut within its first or second frame,
    it holds no frames to judge a face over."""
    frames = [stamp_number(frame, number) for number, frame in enumerate(face_frames(6, (400, 240)))]
    data = write_animated_webp(tmp_path / "whole.webp", frames, [100] * 6).read_bytes()
    cut, trailing = tmp_path / "cut.webp", tmp_path / "trailing.webp"
    cut.write_bytes(data[:-100])
    trailing.write_bytes(data + bytes(100))
    frames_end, at = [], 12
    while at < len(data):  # the file's chunks: four letters, then the length of what follows
        kind, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        at += 8 + size + size % 2
        if kind == b"ANMF":
            frames_end.append(at)
    first_cut, second_cut = tmp_path / "first-cut.webp", tmp_path / "second-cut.webp"
    first_cut.write_bytes(data[: frames_end[0] - 100])
    second_cut.write_bytes(data[: frames_end[1] - 100])
    assert probe_video(cut).frame_count == 5
    sampled = read_frames(cut, 10)
    assert sampled.info.cut_short and sampled.info.frame_count == 5 and sampled.info.duration_s == pytest.approx(0.5)
    assert [read_stamp(frame) for frame in sampled.frames] == sampled.indices == list(range(5))
    for path in (tmp_path / "whole.webp", trailing):
        sampled = read_frames(path, 10)
        assert not sampled.info.cut_short and [read_stamp(frame) for frame in sampled.frames] == list(range(6))
    for read in (probe_video, lambda path: read_frames(path, 10)):
        for path in (first_cut, second_cut):
            with pytest.raises(VideoError, match="ends early, before its second picture"):
                read(path)


def test_an_animated_gif_cut_short_is_told_where_it_ends_within_a_block(tmp_path):
    """FFmpeg reads the frames of a GIF cut short, unflagged; its blocks tell where it ends. One
    that ends between two blocks, without its trailer, is shown whole by browsers, and not told.
    Cut within its first frame, it holds no frames to judge a face over."""
    frames = [stamp_number(frame, number) for number, frame in enumerate(face_frames(20, (320, 180)))]
    whole = write_video(tmp_path / "anim.gif", frames, "gif", pix_fmt="rgb8")
    sampled = read_frames(whole, 10)
    assert not sampled.info.cut_short and sampled.info.frame_count == 20
    data = whole.read_bytes()
    assert data[-1] == 0x3B  # the trailer
    sampled = read_frames(cut_short_copy(whole, tmp_path / "cut.gif", 0.6), 10)
    assert sampled.info.cut_short and 8 <= sampled.info.frame_count <= 14
    assert [read_stamp(frame) for frame in sampled.frames] == sampled.indices
    without_trailer = tmp_path / "without-trailer.gif"
    without_trailer.write_bytes(data[:-1])
    sampled = read_frames(without_trailer, 10)
    assert not sampled.info.cut_short and sampled.info.frame_count == 20
    with av.open(str(whole)) as container:
        first = next(packet for packet in container.demux(container.streams.video[0]) if packet.size)
    within_first = tmp_path / "within-first.gif"
    within_first.write_bytes(data[: first.pos + first.size // 2])
    for read in (probe_video, lambda path: read_frames(path, 10)):  # not taken for a photo
        with pytest.raises(VideoError, match="ends early, before its second picture"):
            read(within_first)


def test_a_two_frame_video_is_still_a_video(tmp_path):
    assert len(read_frames(write_h264(tmp_path / "two.mp4", face_frames(2)), 10).frames) == 2


@pytest.mark.parametrize("clip", ["not_video", "truncated", "empty"])
def test_unreadable_files_raise(media, clip):
    with pytest.raises(VideoError):
        read_frames(media[clip], 10)


@pytest.mark.parametrize("clip", ["sound_only", "song"])
def test_a_sound_recording_is_told_apart_from_a_broken_video(media, clip):
    for read in (probe_video, lambda path: read_frames(path, 10)):
        with pytest.raises(VideoError, match="sound but no video"):
            read(media[clip])


def test_frames_too_large_to_read_are_refused_and_8k_frames_are_not(media, tmp_path):
    for read in (probe_video, lambda path: read_frames(path, 10)):
        with pytest.raises(FramesTooLarge, match="8448×8192 pixels"):
            read(media["huge_frames"])
    info = probe_video(write_flat_h264(tmp_path / "8k.mp4", (7680, 4320)))
    assert (info.width, info.height) == (7680, 4320)


def test_expand_box_is_clamped_to_frame():
    shape = (360, 640, 3)
    top, right, bottom, left = expand_box((5, 60, 55, 10), shape, margin=0.5)  # face in the corner
    assert top == 0 and left == 0
    assert bottom - top == right - left == 100
    top, right, bottom, left = expand_box((300, 640, 360, 580), shape, margin=0.5)
    assert bottom == 360 and right == 640 and top >= 0 and left >= 0


def test_crop_of_corner_face_has_no_wraparound():
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[:100, :100] = 255  # the face region, top-left corner
    frame[150:, 150:] = 128  # the opposite corner: a negative index would pull this in
    crop = crop_face(frame, (0, 60, 60, 0), size=64)
    assert crop.shape == (64, 64, 3)
    assert (crop == 128).sum() == 0


def test_detect_faces_on_face_clip(media):
    sampled = read_frames(media["face_h264"], 5)
    for frame in sampled.frames:
        boxes = detect_faces(frame)
        assert len(boxes) == 1
        top, right, bottom, left = boxes[0]
        assert 0 <= top < bottom <= 360 and 0 <= left < right <= 640
        assert 40 < bottom - top < 200


def test_downscaled_detection_matches_full_resolution_at_720p(media):
    import face_recognition

    sampled = read_frames(media["face_h264"], 3)
    for frame in sampled.frames:
        big = cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_CUBIC)
        (fast,) = detect_faces(big)  # HOG on a 0.46× copy
        (full,) = face_recognition.face_locations(big)  # the original: full resolution, upsample 1
        assert max(abs(a - b) for a, b in zip(fast, full)) <= 8, (fast, full)


def test_no_face_found_in_blank_clip(media):
    sampled = read_frames(media["no_face"], 5)
    assert all(detect_faces(f) == [] for f in sampled.frames)


def test_a_pattern_on_clothes_is_not_taken_for_a_face():
    import model.faces as faces
    from media import close_up_frames, parent_and_child_frame

    frames = close_up_frames()
    # HOG finds her suit's badge below her face (scoring about 0.15 in these frames), and it is left out
    assert all(len(faces._search(frame, 0)) == 2 for frame in frames)
    assert all(len(detect_faces(frame)) == 1 for frame in frames)
    # a face there that HOG is sure of (0.8) is a face: a child held by the parent
    parent, child = faces._search(parent_and_child_frame(), 0)
    assert faces._on_body(child[0], parent[0]) and detect_faces(parent_and_child_frame()) == [parent[0], child[0]]
    # where a weak box lies decides: below a larger face, in its body's span, or not
    face = (100, 300, 300, 100)  # 200 px tall and wide
    below, beside, far_below = (400, 250, 480, 170), (120, 520, 200, 440), (1200, 250, 1280, 170)
    kept = faces._not_on_clothes([(face, 1.2), (below, 0.2), (beside, 0.2), (far_below, 0.2)])
    assert kept == [face, beside, far_below]
    assert faces._not_on_clothes([(face, 1.2), (below, 0.6)]) == [face, below]
    assert faces._not_on_clothes([(face, 0.3), (below, 0.2)]) == [face, below]  # neither is sure


def test_a_box_turns_with_its_frame():
    from model.faces import turn_box

    frame = np.zeros((90, 160), np.uint8)
    box = (10, 70, 40, 25)  # rows 10–39, columns 25–69
    frame[10:40, 25:70] = 1
    for quarters in range(4):
        rows, columns = np.nonzero(np.rot90(frame, quarters))
        assert turn_box(box, frame.shape, quarters) == (rows.min(), columns.max() + 1, rows.max() + 1, columns.min())
        assert turn_box(turn_box(box, frame.shape, quarters), np.rot90(frame, quarters).shape, -quarters) == box


def test_faces_in_a_video_stored_on_its_side_are_found_turned_upright(media):
    from model.faces import best_turn

    upright = read_frames(media["face_h264"], 6).frames
    assert best_turn(upright) == 0  # its face turned any way is no face HOG is sure of
    for quarters in (1, 2, 3):
        stored = [np.ascontiguousarray(np.rot90(frame, quarters)) for frame in upright]
        assert detect_faces(stored[2]) == []
        assert best_turn(stored) == 4 - quarters
    assert best_turn(read_frames(media["no_face"], 6).frames) == 0


def test_tracking_keeps_the_consistent_face():
    big_once = [(0, 300, 300, 0)]
    steady = (100, 200, 160, 140)
    detections = [[steady], [steady, (300, 500, 400, 400)], [steady], big_once + [steady]]
    (track,) = track_faces(detections, max_tracks=1)
    assert track.frame_positions == [0, 1, 2, 3]
    assert all(box == steady for box in track.boxes)


def test_one_box_of_another_size_does_not_end_a_track():
    # a face's boxes in frames of a real clip re-encoded at 480p: 76, 78, then 108 px tall for one
    # frame (overlapping the next by an IoU of 0.27, and 1.7 times its height), then 64 again
    detections = [[(66, 623, 142, 546)], [(82, 640, 160, 563)], [(67, 652, 175, 545)], [(69, 597, 133, 533)], [(76, 597, 140, 533)]]
    tracks = track_faces(detections, max_tracks=None)
    assert [t.frame_positions for t in tracks] == [[0, 1, 2, 3, 4]]


def test_a_face_beside_where_another_was_is_not_taken_for_it():
    # two people 200 px apart; the one on the left is missed in frame 1 and found again in frame 2
    left, right = (100, 200, 180, 120), (100, 400, 180, 320)
    detections = [[left, right], [right], [left, right], [right], [left, right]]
    tracks = track_faces(detections, max_tracks=None)
    assert sorted(t.frame_positions for t in tracks) == [[0, 1, 2, 3, 4], [0, 2, 4]]
    assert all(len(set(t.boxes)) == 1 for t in tracks)


def test_frames_between_steady_detections_are_interpolated(monkeypatch):
    import model.faces as faces

    boxes = {0: [(100, 200, 200, 100)], 2: [(104, 204, 204, 104)], 4: [(300, 400, 400, 300)], 3: [(200, 300, 300, 200)]}
    called = []

    def fake_detect(frame, deepest=1, look_beside=False, searched=None):
        called.append(int(frame[0, 0, 0]))
        return boxes.get(int(frame[0, 0, 0]), [])

    monkeypatch.setattr(faces, "detect_faces", fake_detect)
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(5)]
    detections = faces.detect_faces_in_frames(frames)
    assert detections[1] == [(102, 202, 202, 102)]  # steady neighbours: averaged, not detected
    assert detections[3] == boxes[3]  # the face jumped: frame 3 was really detected
    assert sorted(called) == [0, 2, 3, 4]


@pytest.mark.parametrize("far_scale", [1.0, 1.2])
def test_a_far_face_beside_a_near_one_is_found_when_several_faces_are_wanted(far_scale):
    import face_recognition

    from model.faces import detect_faces_in_frames, extract_face_crops

    frames = near_and_far_frames(6, far_scale)
    full = sorted(face_recognition.face_locations(frames[0]), key=lambda b: b[3])  # the original: full resolution
    assert len(full) == 2 and len(detect_faces(frames[0])) == 1  # the quick search alone misses the far face
    assert [len(d) for d in detect_faces_in_frames(frames)] == [1] * 6  # one face wanted: the quick search
    for boxes in detect_faces_in_frames(frames, several_faces=True):
        # both faces, where the original finds them; nothing on the badge of her suit (far_scale 1.0)
        assert len(boxes) == 2
        for found, original in zip(sorted(boxes, key=lambda b: b[3]), full):
            assert iou(found, original) > 0.5, (found, original)
    assert len(extract_face_crops(frames, max_tracks=4)) == 2 and len(extract_face_crops(frames, max_tracks=1)) == 1


def test_a_face_too_small_for_the_usual_copy_is_found_on_a_finer_one():
    import face_recognition

    from model.faces import detect_faces_in_frames

    far = near_and_far_frames(4, far_scale=0.8, size=(1920, 1080))
    frames = [np.where(np.arange(1920)[None, :, None] < 960, 40, f).astype(np.uint8) for f in far]  # the far face alone
    # the original search (full resolution) finds the face, about 75 px tall, and, at this size, the badge on her suit too
    face, badge = sorted(face_recognition.face_locations(frames[0]))
    assert face[2] - face[0] < 80 and detect_faces(frames[0]) == []  # the usual copy finds nothing
    for boxes in detect_faces_in_frames(frames):
        (found,) = boxes  # the face; the badge below it, a pattern on her clothes, is left out
        assert iou(found, face) > 0.5, (found, face)


def test_the_search_is_chosen_on_a_few_frames_and_each_frame_searched_once(monkeypatch):
    import model.faces as faces

    near, far = (100, 200, 200, 100), (100, 700, 150, 650)
    finest = len(faces.SEARCH_LEVELS) - 1
    calls = []

    def fake_detect(frame, deepest=1, look_beside=False, searched=None):
        calls.append((deepest, look_beside))
        if frame[0, 0, 0] == 1:  # a video whose only face shows at the finest level
            return [far] if deepest == finest else []
        return [near, far] if look_beside else [near]

    monkeypatch.setattr(faces, "detect_faces", fake_detect)
    assert faces._probe_positions(8) == [2, 6]
    small_face_video = [np.ones((8, 8, 3), np.uint8)] * 8
    assert faces.detect_faces_in_frames(small_face_video) == [[far]] * 8
    # both probes as usual, the first then down to the finest level, which finds the face; then each frame
    # once down to it: the even ones, and the last, with no detected neighbour after it (the others lie
    # between steady neighbours and take their boxes)
    assert calls == [(1, False)] * 2 + [(finest, False)] * 5

    video = [np.zeros((8, 8, 3), np.uint8)] * 8
    calls.clear()
    assert faces.detect_faces_in_frames(video, several_faces=True) == [[near, far]] * 8
    # the probes are asked each way side by side: the first shows a face, and more beside it one level
    # finer, so every frame is searched so (the second probe's plain search is the first of that one's)
    assert calls == [(1, False)] * 2 + [(1, True)] * 2 + [(1, True)] * 3
    calls.clear()
    assert faces.detect_faces_in_frames(video) == [[near]] * 8 and calls == [(1, False)] * 5
    calls.clear()
    assert faces.detect_faces_in_frames([np.full((8, 8, 3), 2, np.uint8)] * 2) == [[near]] * 2  # one probe: frame 0
    assert calls == [(1, False)] * 2  # frame 0, then frame 1 (no neighbour after it)


def test_progress_is_heard_between_the_first_searches(monkeypatch):
    """The searches that choose how to search (several a frame, deeper ones among them) come before
    any frame is done: the progress hears each, so an analysis stopped then stops at the next."""
    import model.faces as faces

    events = []

    def fake_detect(frame, deepest=1, look_beside=False, searched=None):
        events.append("search")
        return [(100, 200, 200, 100)] if deepest == len(faces.SEARCH_LEVELS) - 1 else []  # a face at the finest level only

    monkeypatch.setattr(faces, "detect_faces", fake_detect)
    video = [np.zeros((8, 8, 3), np.uint8)] * 8
    faces.detect_faces_in_frames(video, events.append, several_faces=True, picture=None)
    assert events.count("search") >= 8
    assert not any(a == b == "search" for a, b in zip(events, events[1:])), events


def test_fast_boxes_match_full_resolution_detection_on_clip(media):
    """The fast path (downscaled HOG on the same pyramid grid, interpolation) gives the original
    path's boxes (full resolution, upsample 1) within a few pixels, or, where the face scores
    alike at two neighbouring scales of that grid and the two paths take one each, the box of the
    scale next to it (5/6 or 6/5 its side) about the same centre: which of the two wins turns on
    the encoder's noise (seen on one frame in ten of this clip as x264 made it with some numbers
    of threads, on none with others)."""
    import face_recognition

    from model.faces import detect_faces_in_frames

    sampled = read_frames(media["face_h264"], 10)
    deviations = []
    for frame, fast in zip(sampled.frames, detect_faces_in_frames(sampled.frames)):
        (full,) = face_recognition.face_locations(frame)
        assert len(fast) == 1
        deviation = max(abs(a - b) for a, b in zip(fast[0], full))
        deviations.append(deviation)
        if deviation > 3:
            (top, right, bottom, left), (full_top, full_right, full_bottom, full_left) = fast[0], full
            sides = (bottom - top) / (full_bottom - full_top), (right - left) / (full_right - full_left)
            assert all(min(abs(side - 5 / 6), abs(side - 6 / 5)) < 0.03 for side in sides), (fast[0], full)
            centre_offset = max(abs(top + bottom - full_top - full_bottom), abs(left + right - full_left - full_right)) / 2
            assert centre_offset <= 6, (fast[0], full)
    assert np.median(deviations) <= 3, deviations


def test_detection_scale_lies_on_the_full_resolution_grid():
    from model.faces import detection_scale

    for height, width in ((720, 1280), (1080, 1920), (360, 640), (2160, 3840)):
        scale = detection_scale(height, width)
        assert scale * max(height, width) <= 640
        steps = np.log(2 / scale) / np.log(6 / 5)
        assert abs(steps - round(steps)) < 1e-9
        assert scale * (6 / 5) * max(height, width) > 640  # the largest such scale


@pytest.mark.parametrize("header_count", [0, 400, 4000])
def test_wrong_or_missing_frame_count_is_corrected(media, monkeypatch, header_count):
    import model.video as video

    real_probe, lies = video._probe, []

    def lying_probe(path, open_capture):
        info = real_probe(path, open_capture)
        info.frame_count = header_count
        lies.append(path)
        return info

    monkeypatch.setattr(video, "_probe", lying_probe)
    sampled = video.read_frames(media["face_h264"], 10)
    assert lies  # the reader believed the header at first
    assert sampled.info.frame_count == 40
    assert len(sampled.frames) == 10 and sampled.indices[-1] >= 36


def test_a_long_video_with_no_frame_to_read_is_refused_as_such(media, monkeypatch):
    import model.video as video

    real_probe = video._probe

    def long_probe(path, open_capture):
        info = real_probe(path, open_capture)
        info.frame_count = 10**6  # long enough to seek
        return info

    real_facts = video.container_facts
    monkeypatch.setattr(video, "_probe", long_probe)
    # and as many packets, a tenth of a second apart (fewer would be counted instead)
    monkeypatch.setattr(video, "container_facts", lambda path, heartbeat=None: real_facts(path, heartbeat)._replace(shown_s=np.arange(10**6) / 10))
    monkeypatch.setattr(video, "_count_frames", lambda capture, limit=None: 0)  # and nothing there to count
    with pytest.raises(VideoError, match="no decodable frames"):
        video.read_frames(media["face_h264"], 10, seek_min_gap=1)


@pytest.mark.parametrize("seek_min_gap", [10**9, 10])
def test_a_part_past_the_end_of_a_video_whose_header_lies_is_found_outside_it(media, monkeypatch, seek_min_gap):
    import model.video as video

    real_probe = video._probe

    def lying_probe(path, open_capture):
        info = real_probe(path, open_capture)
        info.frame_count = 400  # ten times the frames there are
        return info

    monkeypatch.setattr(video, "_probe", lying_probe)
    with pytest.raises(OutsideVideo, match="0:04 long"):
        video.read_frames(media["face_h264"], 10, seek_min_gap=seek_min_gap, part=TimeRange(20.0))
    sampled = video.read_frames(media["face_h264"], 10, seek_min_gap=seek_min_gap, part=TimeRange(2.0))
    assert sampled.info.frame_count == 40 and sampled.span == (20, 40) and len(sampled.frames) == 10


def test_pyav_reads_a_part_as_opencv_does(media):
    import model.video as video

    args = (media["face_h264"], 6, 10, None, video.MAX_FRAME_SIDE, TimeRange(1.2, 3.0))
    opencv, pyav = video._sample(*args, open_with_opencv), video._sample(*args, PyAVCapture)
    assert pyav.indices == opencv.indices and pyav.span == opencv.span == (12, 30)
    for a, b in zip(opencv.frames, pyav.frames):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2


@pytest.mark.parametrize("reader", ["opencv", "pyav"])
@pytest.mark.parametrize("seek_min_gap", [10**9, 10, 1])  # from the first frame; seeking to the part; seeking to each frame
def test_a_part_of_a_video_whose_frame_rate_varies_is_found_by_its_times(variable_rate, reader, seek_min_gap):
    import model.video as video

    open_capture = {"opencv": open_with_opencv, "pyav": PyAVCapture}[reader]
    sampled = video._sample(variable_rate, 6, seek_min_gap, None, video.MAX_FRAME_SIDE, TimeRange(6.0, 9.0), open_capture)
    assert sampled.method == ("seek" if seek_min_gap == 1 else "sequential")
    # 6 s is frame 150 + 15, 9 s frame 150 + 60, at 15 frames a second after the first 5 s at 30
    assert sampled.span == (165, 210) and sampled.span_s == pytest.approx((6.0, 9.0))
    assert [read_stamp(frame) for frame in sampled.frames] == sampled.indices  # the very frames, by the number on them
    times = [sampled.timeline.time_s(index) for index in sampled.indices]
    assert times == pytest.approx([VARIABLE_RATE_TIMES_S[index] for index in sampled.indices], abs=1e-4)
    # the frames on show at the middle of each sixth of the part
    assert times == pytest.approx([6.25, 6.75, 7.25, 7.75, 8.25, 8.75], abs=1 / 15)
    assert sampled.info.frame_count == 225 and sampled.info.duration_s == pytest.approx(10.0)


def test_a_whole_video_whose_frame_rate_varies_is_spread_over_in_time(variable_rate):
    sampled = read_frames(variable_rate, 10)
    assert sampled.span_s == pytest.approx((0.0, 10.0))
    assert [read_stamp(frame) for frame in sampled.frames] == sampled.indices
    times = [sampled.timeline.time_s(index) for index in sampled.indices]
    assert times == pytest.approx([VARIABLE_RATE_TIMES_S[index] for index in sampled.indices], abs=1e-4)
    assert times == pytest.approx([0.5 + i for i in range(10)], abs=1 / 15)  # as many from 0–5 s at 30 fps as from 5–10 s at 15
    assert len(read_frames(variable_rate, 100, part=TimeRange(6.0, 7.0)).indices) == 15  # the part's 15 frames, each once


def test_the_containers_times_are_kept_only_where_the_frame_rate_varies():
    webm_times = np.round(np.arange(40) / 30, 3)  # a steady 30 frames a second, kept to the millisecond
    assert Timeline.of(30.0, 40, webm_times).shown_s is None
    assert Timeline.of(22.5, 224, np.array(VARIABLE_RATE_TIMES_S)).shown_s is None  # not one time a frame
    varying = Timeline.of(22.5, 225, np.array(VARIABLE_RATE_TIMES_S))
    assert varying.shown_s is not None and varying.duration_s == pytest.approx(10.0)
    assert varying.frame_at(6.0) == varying.frame_at(6.06) == 165 and varying.frame_at(4.99) == 149
    assert varying.first_from(9.0) == 210 and varying.first_from(8.99) == 210 and varying.first_from(9.01) == 211
    assert varying.time_s(165) == pytest.approx(6.0) and varying.time_s(225) == pytest.approx(10.0)
    assert TimeRange(6.0, 9.0).frames(varying) == (165, 210) and TimeRange(6.0, 9.0).frames(Timeline(22.5, 225)) == (135, 203)
    with pytest.raises(OutsideVideo, match="0:10 long"):
        TimeRange(10.0).frames(varying)


def test_a_face_that_jumps_between_sampled_frames_is_followed_as_one_person(two_minutes):
    frames = read_frames(two_minutes, 10).frames
    split = track_faces(detect_faces_in_frames(frames, several_faces=True), max_tracks=None)
    assert len(split) == 2  # the boxes 12 s apart do not overlap: the tracker alone starts a second face
    (face,) = extract_face_crops(frames, max_tracks=4)
    assert face.track.frame_positions == list(range(10)) and len(face.crops) == 10


def test_two_faces_in_the_same_frames_stay_two_and_are_not_compared(monkeypatch):
    import model.faces as faces

    compared = []
    monkeypatch.setattr(faces, "face_encoding", lambda frames, track: compared.append(track) or np.zeros(128))
    frames = two_face_frames(8)  # the astronaut and her mirror image: one identity to face_recognition
    tracks = track_faces(detect_faces_in_frames(frames, several_faces=True), max_tracks=None)
    assert len(tracks) >= 2 and len(tracks[1].boxes) >= 4
    assert [face.track for face in extract_face_crops(frames, max_tracks=4)] == tracks
    assert compared == []  # seen together, they are two people whatever their faces


@pytest.mark.parametrize("distance, merged", [(0.3, True), (0.7, False)])
def test_tracks_apart_in_time_are_joined_only_when_their_faces_match(monkeypatch, distance, merged):
    import model.faces as faces

    box = (10, 60, 60, 10)
    first, second = FaceTrack([0, 1, 2], [box] * 3), FaceTrack([3, 4], [box] * 2)
    lone, overlapping = FaceTrack([5], [box]), FaceTrack([2, 5], [box] * 2)
    vectors = {id(first): np.zeros(128), id(second): np.full(128, distance / np.sqrt(128))}
    monkeypatch.setattr(faces, "face_encoding", lambda frames, track: vectors.get(id(track), np.zeros(128)))
    tracks = merge_same_faces([first, second, overlapping, lone], frames=[])
    if merged:
        assert [t.frame_positions for t in tracks] == [[0, 1, 2, 3, 4], [2, 5], [5]]
    else:
        assert [t.frame_positions for t in tracks] == [[0, 1, 2], [3, 4], [2, 5], [5]]
    # a track seen once is never joined (it is dropped unless it is the only face), nor one that shares a frame


def _portrait_picture(frames: list[np.ndarray]) -> list[np.ndarray]:
    """The middle of landscape face frames, as a portrait phone video."""
    return [np.ascontiguousarray(f[:, 220:420]) for f in frames]


@pytest.mark.parametrize(
    "make, size",
    [
        (lambda frames: frames, (360, 640)),  # a landscape video in a portrait frame: the copy above and below
        (_portrait_picture, (640, 360)),  # a portrait video in a landscape frame: the copy beside it
    ],
)
def test_the_picture_is_found_over_a_blurred_copy_of_itself(make, size):
    framed, (top, right, bottom, left) = over_blurred_copy(make(face_frames(10)), size, sigma=4)
    found = picture_region(framed)
    assert found is not None
    # the whole picture, and at most a few pixels of the copy beside it (a compared row is 2.7 px)
    assert found[0] <= top and found[1] >= right and found[2] >= bottom and found[3] <= left
    assert max(top - found[0], found[1] - right, found[2] - bottom, left - found[3]) <= 6


def test_no_picture_is_found_in_a_plain_video_nor_between_black_bars():
    frames = face_frames(10)
    assert picture_region(frames) is None
    assert picture_region([np.pad(f, ((140, 140), (0, 0), (0, 0))) for f in frames]) is None


def test_faces_are_searched_for_in_the_picture_alone():
    framed, (top, right, bottom, left) = over_blurred_copy(face_frames(10), (360, 640), sigma=2)
    detections = detect_faces_in_frames(framed, several_faces=True)
    # the copy's face, twice as large and lightly blurred, is one HOG finds; it is not the video's face
    assert all(len(boxes) == 1 for boxes in detections)
    for t, r, b, l in (box for boxes in detections for box in boxes):
        assert top <= (t + b) / 2 <= bottom and left <= (l + r) / 2 <= right


def test_face_roll_reads_how_far_a_face_leans():
    frame = face_frames(1)[0]
    upright = face_roll(frame, detect_faces(frame)[0])
    assert abs(upright) < 10
    for degrees in (-30, 20, 35):
        turned = turned_about_centre(frame, degrees)
        # turned counter-clockwise, the eye line rises to the right: the roll falls
        assert face_roll(turned, detect_faces(turned)[0]) - upright == pytest.approx(-degrees, abs=4)


def test_a_face_that_leans_far_is_cropped_upright_and_an_upright_one_as_it_is():
    frames = face_frames(6)
    crop_box = (19, 93, 93, 19)  # where the face lies in a 112 px crop (CROP_MARGIN 0.25)
    for degrees in (30, -35):
        turned = [turned_about_centre(f, degrees) for f in frames]
        (face,) = extract_face_crops(turned)
        rolls = [face_roll(crop, crop_box) for crop in face.crops]
        assert all(abs(roll) < 8 for roll in rolls), rolls
        box = face.track.boxes[0]
        assert upright_rotation(turned[0], box) is not None
        leaning = crop_face(turned[0], box)  # as it was cropped before
        assert abs(face_roll(leaning, crop_box)) > 20
    (face,) = extract_face_crops(frames)
    assert all(upright_rotation(frames[p], box) is None for p, box in zip(face.track.frame_positions, face.track.boxes))
    assert np.array_equal(face.crops[0], crop_face(frames[face.track.frame_positions[0]], face.track.boxes[0]))
