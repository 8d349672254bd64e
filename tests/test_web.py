from __future__ import annotations

import html as html_text
import io
import json
import re
import sqlite3
from fractions import Fraction
from functools import partial

import cv2
import numpy as np
import pytest
from conftest import app_config
from media import (
    VARIABLE_RATE_TIMES_S,
    blank_frames,
    cut_short_copy,
    damaged_copy,
    face_frames,
    grid_frames,
    over_blurred_copy,
    turned_about_centre,
    two_face_frames,
    undecodable_frame_copy,
    write_animated_webp,
    write_h264,
    write_key_every_10,
    write_video,
    write_with_silence,
    zeroed_stretch_copy,
)

from app import create_app
from model.damage import Damage
from model.detector import Detector, video_p_fake
from model.network import load_checkpoint, save_checkpoint
from model.video import VideoError, read_frames


def post(client, url, path=None, data=b"", name="clip.mp4", follow=False, **form):
    payload = dict(form)
    if path is not None:
        data = path.read_bytes()
    payload["video"] = (io.BytesIO(data), name)
    return client.post(url, data=payload, content_type="multipart/form-data", follow_redirects=follow)


def judged_page(client, path, **form):
    """The page the form without JavaScript leads to, once the analysis it queued is done."""
    response = post(client, "/detect", path, **form)
    assert response.status_code == 303
    assert client.application.extensions["job_worker"].join(60)
    return client.get(response.headers["Location"])


def test_index_page(client):
    page = client.get("/")
    assert page.status_code == 200
    assert b"Is your video fake? Check it!" in page.data
    assert b'type="file"' in page.data
    # an animated GIF or WebP is a clip too: offered by the file picker, as are transport
    # streams (.ts is TypeScript to many systems), DVD files and raw streams, which are not
    # video/* to every system
    accept = re.search(rb'type="file" accept="([^"]+)"', page.data).group(1).decode().split(",")
    assert {"video/*", "image/gif", "image/webp", ".ts", ".mts", ".m2ts", ".vob", ".h264", ".264", ".hevc", ".h265"} <= set(accept)
    assert b"No model is installed" not in page.data
    # the frames field says what more frames buy, and is tied to that hint for screen readers
    assert b'aria-describedby="sequence-length-hint"' in page.data
    assert b'id="sequence-length-hint"' in page.data and b"no more accurate with 60 frames" in page.data
    icon = re.search(rb'<link rel="icon" href="([^"]+)"', page.data).group(1).decode()
    assert client.get(icon).status_code == 200  # so browsers do not ask for /favicon.ico and get a 404


def test_healthz(client):
    body = client.get("/healthz").get_json()
    assert body == {"status": "ok", "model_installed": True}


@pytest.mark.parametrize("clip", ["face_h264", "face_mp4v"])
def test_api_detects_face_clip(client, media, clip):
    response = post(client, "/api/v1/detect", media[clip])
    assert response.status_code == 200, response.data
    body = response.get_json()
    assert body["label"] in ("REAL", "FAKE")
    assert 50.0 <= body["confidence"] <= 100.0
    assert 0.0 <= body["p_fake"] <= 1.0
    assert body["frames"] == 20 and body["faces"] >= 15
    assert body["video"]["width"] == 640 and body["video"]["height"] == 360
    assert len(body["frame_scores"]) == body["faces"]
    assert {"decode", "faces", "model", "total"} <= set(body["seconds"])
    assert body["picture"] is None  # the whole frame searched
    [track] = body["face_tracks"]
    assert track["track_id"] == body["deciding_track"] == 1
    assert track["p_fake"] == body["p_fake"] and track["frames_seen"] == body["faces"]
    assert body["model"]["name"] == "tiny.pt" and len(body["model"]["version"]) == 12
    assert client.get(body["report_url"]).get_json() == {k: v for k, v in body.items() if k != "report_url"}


def test_api_sequence_length(client, media):
    body = post(client, "/api/v1/detect", media["face_h264"], sequence_length="12").get_json()
    assert body["frames"] == 12
    assert body["options"]["sequence_length"] == 12


@pytest.mark.parametrize("value", ["5", "101", "abc"])
def test_api_rejects_bad_sequence_length(client, media, value):
    response = post(client, "/api/v1/detect", media["face_h264"], sequence_length=value)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_sequence_length"


def test_a_part_of_the_video_is_examined_and_shown_as_such(client, media):
    body = post(client, "/api/v1/detect", media["face_h264"], sequence_length="10", start="1.2", end="0:03").get_json()
    assert body["options"] == {"max_faces": 4, "sequence_length": 10, "start_s": 1.2, "end_s": 3.0}
    assert body["span_s"] == [1.2, 3.0] and body["video"]["duration_s"] == 4.0
    assert body["frames"] == 10 and all(1.2 <= s["time_s"] < 3.0 for s in body["frame_scores"])
    html = client.get(f"/results/{body['id']}").data.decode()
    assert "<dt>Part examined</dt><dd>0:01.2 to 0:03 (of 0:04)</dd>" in html
    assert ">1.2 s</text>" in html and ">3.0 s</text>" in html  # the chart spans the part
    xs = [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', html)]
    assert min(xs) >= 0 and max(xs) <= 600 and max(xs) - min(xs) > 500
    whole = post(client, "/api/v1/detect", media["face_h264"], sequence_length="10", start="", end="").get_json()
    assert whole["options"] == {"max_faces": 4, "sequence_length": 10} and whole["span_s"] == [0.0, 4.0]
    assert "Part examined" not in client.get(f"/results/{whole['id']}").data.decode()


def test_a_closer_look_where_the_face_was_found_is_shown_as_the_part_examined(client, tmp_path):
    faces, blank = face_frames(40), blank_frames(40, (640, 360))
    brief = write_h264(tmp_path / "brief.mp4", [faces[i] if 18 <= i <= 21 else blank[i] for i in range(40)])
    body = post(client, "/api/v1/detect", brief).get_json()
    assert body["closer_look"] == {"span_s": [0.0, 4.0], "frames": 20, "seen": 2} and body["span_s"] == [1.7, 2.3]
    assert body["caveats"][0]["code"] == "closer_look" and "options" in body and "start_s" not in body["options"]
    html = client.get(f"/results/{body['id']}").data.decode()
    assert "<dt>Part examined</dt><dd>0:01.7 to 0:02.3 (of 0:04; looked at again where the face was found)</dd>" in html
    assert 'data-caveat="closer_look"' in html and ">1.7 s</text>" in html  # the chart spans the part


def test_times_are_the_videos_own_where_its_frame_rate_varies(client, variable_rate):
    body = post(client, "/api/v1/detect", variable_rate, sequence_length="10", start="6", end="9").get_json()
    assert body["span_s"] == [6.0, 9.0] and body["video"]["duration_s"] == 10.0
    shown = {round(t, 3) for t in VARIABLE_RATE_TIMES_S if 6.0 <= t < 9.0}
    assert body["frames"] == 10 and {s["time_s"] for s in body["frame_scores"]} <= shown


@pytest.mark.parametrize(
    "form, message",
    [
        ({"start": "abc"}, "is not a time"),
        ({"start": "1:75"}, "from 0 to 59"),
        ({"start": "3", "end": "2"}, "must come after its start"),
        ({"start": "0:10"}, "The video is 0:04 long: the part to examine must start before its end, not at 0:10."),
    ],
)
def test_a_part_that_is_no_part_of_the_video_gets_a_clear_error(client, media, form, message):
    api = post(client, "/api/v1/detect", media["face_h264"], **form)
    assert api.status_code == 400
    error = api.get_json()["error"]
    assert error["code"] == "bad_time_range" and message in error["message"]
    page = post(client, "/detect", media["face_h264"], **form)
    assert page.status_code == 400 and message.encode() in page.data.replace(b"&#39;", b"'")
    # the upload_dir fixture checks that nothing was kept


def test_page_without_script_redirects_to_result_permalink(client, media):
    response = post(client, "/detect", media["face_h264"])
    assert response.status_code == 303
    permalink = response.headers["Location"]
    assert re.fullmatch(r"/results/[0-9a-f]{32}", permalink)
    assert client.application.extensions["job_worker"].join(60)
    html = client.get(permalink).data.decode()
    assert re.search(r'class="verdict verdict-(real|fake)"', html)
    assert "% confidence" in html
    assert "640 × 360" in html
    crops = re.findall(r'<li><img src="(/results/[0-9a-f]+/images/face1-\d+\.jpg)"', html)
    assert len(crops) >= 15
    points = " ".join(re.findall(r'<polyline class="scores" points="([^"]+)"', html)).split()
    assert len(points) == len(crops)  # one timeline point per judged face
    heatmaps = re.findall(r'<img src="(/results/[0-9a-f]+/images/face1-\d+-heatmap\.jpg)"', html)
    assert len(heatmaps) == 3
    assert "How far to trust" not in html  # the tiny checkpoint states no validation
    for url in (crops[0], heatmaps[0]):
        image = client.get(url)
        assert image.status_code == 200 and image.mimetype == "image/jpeg" and image.data[:2] == b"\xff\xd8"


def test_a_video_of_two_people_weighs_both_faces(client, tmp_path):
    path = write_h264(tmp_path / "two.mp4", two_face_frames())
    body = post(client, "/api/v1/detect", path).get_json()
    tracks = {t["track_id"]: t for t in body["face_tracks"]}
    assert len(tracks) == 2
    suspect = max(tracks.values(), key=lambda t: t["p_fake"])
    assert body["deciding_track"] == suspect["track_id"] and body["frame_scores"] == suspect["frame_scores"]
    assert body["p_fake"] == pytest.approx(video_p_fake([t["p_fake"] for t in tracks.values()]), abs=1e-4)
    assert body["label"] == ("FAKE" if body["p_fake"] >= 0.5 else "REAL")
    html = client.get(f"/results/{body['id']}").data.decode()
    assert "Probability that the video holds a manipulated face: <strong>%.1f%%</strong>" % (body["p_fake"] * 100) in html
    assert "face %d looks the most manipulated (%.1f%%)" % (suspect["track_id"], suspect["p_fake"] * 100) in html


def test_a_video_call_of_more_people_than_are_judged_says_how_many_were_left(client, tmp_path):
    body = post(client, "/api/v1/detect", write_h264(tmp_path / "call.mp4", grid_frames())).get_json()
    assert len(body["face_tracks"]) == 4 and body["faces_not_judged"] == 2
    (caveat,) = [c["message"] for c in body["caveats"] if c["code"] == "faces_not_judged"]
    assert caveat.startswith("6 faces were found in enough of the frames to judge; the 4 seen most often were judged, and the other 2 were not")
    html = client.get(f"/results/{body['id']}").data.decode()
    assert "It weighs the 4 faces judged together" in html and html_text.escape(caveat) in html


def test_a_video_reposted_over_a_blurred_copy_of_itself_says_faces_were_searched_in_the_picture(client, tmp_path):
    framed, (top, right, bottom, left) = over_blurred_copy(face_frames(20), (360, 640), sigma=4)
    body = post(client, "/api/v1/detect", write_h264(tmp_path / "reposted.mp4", framed)).get_json()
    t, r, b, l = body["picture"]
    assert abs(t - top) <= 6 and abs(b - bottom) <= 6 and (l, r) == (0, 360)
    [track] = body["face_tracks"]
    face_top, _, face_bottom, _ = track["box"]
    assert t <= face_top and face_bottom <= b
    html = client.get(f"/results/{body['id']}").data.decode()
    assert "<dt>Faces searched for</dt><dd class=\"picture\">in the picture alone (%d × %d)" % (r - l, b - t) in html
    plain = post(client, "/api/v1/detect", write_h264(tmp_path / "plain.mp4", face_frames(20))).get_json()
    assert "Faces searched for" not in client.get(f"/results/{plain['id']}").data.decode()


def test_a_face_that_leans_far_is_said_to_have_been_turned_upright(client, tmp_path):
    leaning = [turned_about_centre(frame, 35) for frame in face_frames(20)]
    body = post(client, "/api/v1/detect", write_h264(tmp_path / "leaning.mp4", leaning)).get_json()
    [track] = body["face_tracks"]
    turned = [s["turned_deg"] for s in track["frame_scores"]]
    assert all(d == pytest.approx(-35, abs=6) for d in turned)  # turned back clockwise, each crop
    html = client.get(f"/results/{body['id']}").data.decode()
    least, most = "%.0f" % min(-d for d in turned), "%.0f" % max(-d for d in turned)
    span = least if most == least else f"{least}–{most}"
    assert f"This face leaned (by {span}°) in {len(turned)} of its {len(turned)} frames: those crops were turned upright before" in html
    assert html.count("· turned upright</span>") == len(turned)
    upright = post(client, "/api/v1/detect", write_h264(tmp_path / "upright.mp4", face_frames(20))).get_json()
    assert {s["turned_deg"] for s in upright["face_tracks"][0]["frame_scores"]} == {0.0}
    html = client.get(f"/results/{upright['id']}").data.decode()
    assert "leaned" not in html and "turned upright" not in html


def test_a_video_stored_on_its_side_is_judged_with_its_picture_turned(client, tmp_path):
    from model.faces import turn_box

    upright = post(client, "/api/v1/detect", write_h264(tmp_path / "upright.mp4", face_frames(20))).get_json()
    clockwise = [np.ascontiguousarray(np.rot90(frame, -1)) for frame in face_frames(20)]  # its header says nothing of it
    body = post(client, "/api/v1/detect", write_h264(tmp_path / "sideways.mp4", clockwise)).get_json()
    assert body["label"] in ("REAL", "FAKE") and body["picture_turned_deg"] == 90 and upright["picture_turned_deg"] == 0
    assert (body["video"]["width"], body["video"]["height"]) == (360, 640) and body["faces"] == upright["faces"]
    # the face's box in the video as it is stored: where the upright video's lies, turned as this one was
    [track], [upright_track] = body["face_tracks"], upright["face_tracks"]
    assert max(abs(a - b) for a, b in zip(track["box"], turn_box(upright_track["box"], (360, 640), -1))) <= 4
    html = client.get(f"/results/{body['id']}").data.decode()
    assert "<dt>Picture turned</dt><dd class=\"turned\">a quarter turn counter-clockwise, to find the faces upright: " in html
    assert "Picture turned" not in client.get(f"/results/{upright['id']}").data.decode()


def test_result_says_how_far_to_trust_a_model_that_states_its_validation(tmp_path, media, tiny_weights):
    quality = lambda fake, real: {"auc": 0.8, "balanced_accuracy": 0.75, "ece": 0.06, "recall_fake": fake, "recall_real": real}  # noqa: E731
    validation = {
        "method": "cross-validation", "folds": 5, "clips": 106, "identity_groups": 20,
        "qualities": {"orig": quality(0.706, 0.816), "crf40_480p": quality(0.603, 0.842)},
    }
    weights = tmp_path / "validated.pt"
    save_checkpoint(load_checkpoint(tiny_weights), weights, validation=validation)
    client = create_app(app_config(weights, tmp_path)).test_client()
    body = post(client, "/api/v1/detect", media["face_h264"]).get_json()
    assert body["model"]["validation"] == validation
    html = judged_page(client, media["face_h264"]).data.decode()
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    assert (
        "How far to trust this: tested on 106 videos of 20 groups of people it had not seen (cross-validation), this "
        "detector's training recipe caught 71% of the fakes and cleared 82% of the real videos as published; 60% and "
        "84% re-encoded at low quality (H.264 CRF 40, 480p). Fakes made by methods it was not trained on are caught less often, real videos are "
        "called FAKE more often where the person wears glasses, and a caption across the face can turn the verdict either way."
    ) in text
    assert list((tmp_path / "uploads").iterdir()) == []


def test_result_names_an_ensemble_as_such(tmp_path, media, tiny_weights, tiny_ensemble_weights):
    for weights, members in ((tiny_weights, 1), (tiny_ensemble_weights, 2)):
        client = create_app(app_config(weights, tmp_path)).test_client()
        assert post(client, "/api/v1/detect", media["face_h264"]).get_json()["model"]["members"] == members
        text = " ".join(re.sub(r"<[^>]+>", " ", judged_page(client, media["face_h264"]).data.decode()).split())
        shown = "mobilenet_v2, an ensemble of 2 networks, version" if members == 2 else "mobilenet_v2, version"
        assert f"{weights.name} ({shown}" in text
    assert list((tmp_path / "uploads").iterdir()) == []


@pytest.mark.parametrize(
    "name,codec,pix_fmt,options",
    [
        ("browser.webm", "libvpx-vp9", "yuv420p", {}),  # what a browser records
        ("old-browser.webm", "libvpx", "yuv420p", {}),
        ("camera.mkv", "mjpeg", "yuvj420p", {}),
        ("old.avi", "mpeg4", "yuv420p", {}),
        ("phone.mkv", "hevc", "yuv420p", {}),
        ("site.webm", "libsvtav1", "yuv420p", {}),  # AV1, as video sites serve it: decoded by PyAV
        # interlaced, as television and camcorders record it: decoded by PyAV too
        ("broadcast.ts", "mpeg2video", "yuv420p", {"flags": "+ilme+ildct", "b": "4M"}),
        ("camcorder.mts", "libx264", "yuv420p", {"x264-params": "interlaced=1:tff=1"}),
        # HDR as iPhones record it (HLG): decoded by PyAV and tone-mapped
        ("iphone.mov", "libx265", "yuv420p10le", {"x265-params": "colorprim=bt2020:transfer=arib-std-b67:colormatrix=bt2020nc:log-level=error"}),
    ],
)
def test_other_codecs_and_containers_are_judged(client, tmp_path, name, codec, pix_fmt, options):
    path = write_video(tmp_path / name, face_frames(12), codec, pix_fmt=pix_fmt, options=options)
    body = post(client, "/api/v1/detect", path, name=name).get_json()
    assert body["label"] in ("REAL", "FAKE") and body["faces"] >= 8, body
    assert (body["video"]["width"], body["video"]["height"]) == (640, 360)
    assert "damaged" not in [c["code"] for c in body["caveats"]]  # an intact file, whatever its codec


def test_a_tag_not_in_utf8_does_not_stop_the_reading(client, tmp_path):
    """A header's text in another encoding, or damaged (FFmpeg's name as the writing program,
    here), is not read: the video is judged."""
    path = write_h264(tmp_path / "clip.mp4", face_frames(12))
    assert path.read_bytes().count(b"Lavf") == 1
    path.write_bytes(path.read_bytes().replace(b"Lavf", b"\xaeavf"))
    body = post(client, "/api/v1/detect", path).get_json()
    assert body["label"] in ("REAL", "FAKE") and body["faces"] >= 8, body


@pytest.mark.parametrize("with_sound", [False, True])
def test_a_video_stream_of_no_known_codec_is_not_a_video_to_judge(client, tmp_path, with_sound):
    """A header damaged where it names the codec leaves a video stream that no decoder reads;
    beside sound, it is still a video, not a recording of sound."""
    write = partial(write_with_silence, codec="mpeg4") if with_sound else partial(write_video, codec="mpeg4")
    path = write(tmp_path / "old.avi", face_frames(12))
    assert path.read_bytes().count(b"FMP4") == 2  # the stream's header and its picture format
    path.write_bytes(path.read_bytes().replace(b"FMP4", b"QQQQ"))
    response = post(client, "/api/v1/detect", path, name="old.avi")
    assert response.status_code == 415 and response.get_json()["error"]["code"] == "not_a_video"
    assert response.get_json()["error"]["message"].startswith("This file's video names no codec this detector knows: its header may be damaged")
    with pytest.raises(VideoError, match="names no codec this detector knows"):
        read_frames(path, 10)  # as the command line reads it
    # the upload_dir fixture checks that nothing was kept


def test_an_animated_gif_is_judged_and_a_still_one_is_a_photo(client, tmp_path):
    from model.augment import write_gif

    animated, still = tmp_path / "meme.gif", tmp_path / "still.gif"
    write_gif(iter(face_frames(12)), animated, Fraction(10))
    write_gif(iter(face_frames(1)), still, Fraction(10))
    body = post(client, "/api/v1/detect", animated, name="meme.gif").get_json()
    assert body["label"] in ("REAL", "FAKE") and body["faces"] >= 8, body
    refused = post(client, "/api/v1/detect", still, name="still.gif")
    assert refused.status_code == 415 and "single picture, not a video" in refused.get_json()["error"]["message"]


def test_an_animated_webp_is_judged(client, tmp_path):
    path = write_animated_webp(tmp_path / "sticker.webp", face_frames(12), [100] * 12, lossless=False)
    body = post(client, "/api/v1/detect", path, name="sticker.webp").get_json()
    assert body["label"] in ("REAL", "FAKE") and body["faces"] >= 8 and body["video"]["codec"] == "webp", body


def test_an_animated_webp_cut_short_is_judged_on_its_whole_frames_and_says_so(client, tmp_path, upload_dir):
    whole = write_animated_webp(tmp_path / "sticker.webp", face_frames(12), [100] * 12, lossless=False)
    body = post(client, "/api/v1/detect", cut_short_copy(whole, tmp_path / "cut.webp", 0.7), name="cut.webp").get_json()
    assert body["label"] in ("REAL", "FAKE") and body["video"]["cut_short"] and body["video"]["frame_count"] < 12, body
    assert "cut_short" in [caveat["code"] for caveat in body["caveats"]]
    assert list(upload_dir.iterdir()) == []


def test_a_real_verdict_on_a_small_face_carries_a_caveat_in_both_forms(client, tmp_path, monkeypatch):
    monkeypatch.setattr(Detector, "score_features", lambda self, features: (0.2, np.full(len(features), 0.2)))
    path = write_h264(tmp_path / "small.mp4", face_frames(20, (320, 180)))
    body = post(client, "/api/v1/detect", path).get_json()
    height = body["face_tracks"][0]["box"][2] - body["face_tracks"][0]["box"][0]
    assert body["label"] == "REAL" and [c["code"] for c in body["caveats"]] == ["small_face"]
    html = client.get(f"/results/{body['id']}").data.decode()
    note = re.search(r'<p class="notice caveat" role="note" data-caveat="small_face">(.*?)</p>', html, re.S)
    assert note and f"only about {height} px tall" in note.group(1)


def test_a_damaged_file_gets_its_verdict_with_a_caveat_in_both_forms(client, media, tmp_path, upload_dir):
    intact = post(client, "/api/v1/detect", media["face_h264"]).get_json()
    assert "damaged" not in [c["code"] for c in intact["caveats"]]
    body = post(client, "/api/v1/detect", damaged_copy(media["face_h264"], tmp_path / "damaged.mp4")).get_json()
    assert body["label"] in ("REAL", "FAKE") and "damaged" in [c["code"] for c in body["caveats"]]
    html = client.get(f"/results/{body['id']}").data.decode()
    note = re.search(r'<p class="notice caveat" role="note" data-caveat="damaged">(.*?)</p>', html, re.S)
    assert note and "The file is damaged" in note.group(1) and "no face was found" not in note.group(1)
    assert list(upload_dir.iterdir()) == []


@pytest.mark.parametrize("clip", ["face", "no_face"])
def test_a_file_cut_short_is_judged_on_what_it_holds_and_says_so(client, tmp_path, upload_dir, clip):
    """A web video stores its index first: cut off in a download, it still opens, and its index
    counts frames whose data is not there."""
    frames = face_frames(100) if clip == "face" else blank_frames(100)
    whole = write_video(tmp_path / "whole.mp4", frames, "libx264", container_options={"movflags": "+faststart"})
    intact = post(client, "/api/v1/detect", whole).get_json()
    assert intact["video"]["stated_duration_s"] is None and intact["video"]["duration_s"] == pytest.approx(10.0)
    assert "cut_short" not in [c["code"] for c in intact["caveats"]]
    answer = post(client, "/api/v1/detect", cut_short_copy(whole, tmp_path / "cut.mp4"))
    body = answer.get_json()
    assert body["label"] == ("NO_FACE" if clip == "no_face" else intact["label"]), body
    assert answer.status_code == (422 if clip == "no_face" else 200)
    assert body["video"]["stated_duration_s"] == pytest.approx(10.0) and 2.0 < body["video"]["duration_s"] < 8.0
    note = next(c["message"] for c in body["caveats"] if c["code"] == "cut_short")
    assert note.startswith("The file ends early: its header gives the video a length of 0:10, but its data stops at 0:0")
    assert ("searched for faces" in note) == (clip == "no_face")
    assert "damaged" not in [c["code"] for c in body["caveats"]]  # the picture the cut left unfinished is no damage
    html = client.get(f"/results/{body['id']}").data.decode()
    assert re.search(r'<p class="notice caveat" role="note" data-caveat="cut_short">.*?The file ends early', html, re.S)
    assert "the file ends early: its header states 10.0 s" in html
    assert list(upload_dir.iterdir()) == []


def test_a_file_whose_end_is_zeros_says_so(client, tmp_path, upload_dir):
    """A transport stream states no length: zeros after its last packet tell a download written in
    parts that never got its end."""
    whole = write_video(tmp_path / "broadcast.ts", face_frames(100), "libx264", options={"g": "10"})
    body = post(client, "/api/v1/detect", zeroed_stretch_copy(whole, tmp_path / "zeros.ts", 60, 99), name="zeros.ts").get_json()
    assert body["video"]["cut_short"] and body["video"]["ends_in_zeros"] and body["video"]["stated_duration_s"] is None
    note = next(c["message"] for c in body["caveats"] if c["code"] == "cut_short")
    assert note.startswith("The file ends early: zeros take the place of its data from 0:06")
    html = client.get(f"/results/{body['id']}").data.decode()
    assert "(the file ends early: zeros from there on)" in html and "in the middle of a frame" not in html
    assert list(upload_dir.iterdir()) == []


@pytest.mark.parametrize(
    "name, codec, options, streamed",
    [
        ("recording.webm", "libvpx-vp9", {}, True),  # a browser's recording
        ("screen.mp4", "libx264", {"movflags": "frag_keyframe+empty_moov"}, False),
        ("broadcast.ts", "libx264", {}, False),
        ("old.flv", "libx264", {}, False),
    ],
)
def test_a_file_cut_short_that_states_no_length_says_so(client, tmp_path, upload_dir, name, codec, options, streamed):
    """Its header states no length to compare, but it ends within the data of a frame."""
    whole = write_video(tmp_path / name, face_frames(100), codec, container_options=options, streamed=streamed)
    intact = post(client, "/api/v1/detect", whole, name=name).get_json()
    assert not intact["video"]["cut_short"] and "cut_short" not in [c["code"] for c in intact["caveats"]]
    body = post(client, "/api/v1/detect", cut_short_copy(whole, tmp_path / f"cut-{name}", 0.45), name=name).get_json()
    assert body["video"]["cut_short"] and body["video"]["stated_duration_s"] is None and body["label"] == intact["label"]
    note = next(c["message"] for c in body["caveats"] if c["code"] == "cut_short")
    assert note.startswith("The file ends early: its data stops in the middle of a frame, at 0:0")
    assert "damaged" not in [c["code"] for c in body["caveats"]]  # the picture the cut left unfinished is no damage
    html = client.get(f"/results/{body['id']}").data.decode()
    assert re.search(r'<p class="notice caveat" role="note" data-caveat="cut_short">.*?in the middle of a frame', html, re.S)
    assert "(the file ends early, in the middle of a frame)" in html
    assert list(upload_dir.iterdir()) == []


def test_a_stretch_that_does_not_decode_is_told_by_the_reading_itself(client, tmp_path, upload_dir, monkeypatch):
    """Frames 30 to 64 of 90 zeroed, as an unfinished download written in parts leaves them: the
    video keeps its length, and the reading tells the damage where the check beside it did not
    get so far."""
    monkeypatch.setattr("model.detector.check_damage", lambda *args: Damage(0))
    intact = write_key_every_10(tmp_path / "intact.mp4", face_frames(90))
    body = post(client, "/api/v1/detect", zeroed_stretch_copy(intact, tmp_path / "holed.mp4", 30, 64)).get_json()
    assert body["label"] in ("REAL", "FAKE") and body["video"]["duration_s"] == pytest.approx(9.0)
    note = next(c["message"] for c in body["caveats"] if c["code"] == "damaged")
    assert re.match(r"The file is damaged: \d+ pictures of the video did not decode cleanly", note)
    assert list(upload_dir.iterdir()) == []


def test_a_download_that_got_none_of_its_frames_says_so(client, tmp_path, upload_dir):
    """An unfinished download that holds the video's index, but zeros where every frame should be."""
    intact = write_key_every_10(tmp_path / "intact.mp4", face_frames(30))
    response = post(client, "/api/v1/detect", zeroed_stretch_copy(intact, tmp_path / "unfinished.mp4", 0, 29))
    error = response.get_json()["error"]
    assert response.status_code == 415 and error["code"] == "not_a_video"
    assert error["message"].startswith("The file holds zeros where the video's frames should be, as a download that did not finish")
    assert list(upload_dir.iterdir()) == []


def test_a_check_for_damage_that_fails_costs_the_caveat_not_the_verdict(client, media, monkeypatch):
    def failing(*args):
        raise RuntimeError("a decoder's bug")

    monkeypatch.setattr("model.detector.check_damage", failing)
    response = post(client, "/api/v1/detect", media["face_h264"])
    assert response.status_code == 200 and response.get_json()["label"] in ("REAL", "FAKE")


def test_a_result_stored_before_ensembles_existed_still_shows(client, app, media):
    url = post(client, "/detect", media["face_h264"]).headers["Location"]
    assert app.extensions["job_worker"].join(60)
    job_id = url.rstrip("/").split("/")[-1]
    store = app.extensions["job_store"]
    report = store.get(job_id).result
    del report["model"]["members"]  # as the reports stored before this field
    with sqlite3.connect(app.config["JOBS_DB"]) as db:
        db.execute("UPDATE jobs SET result = ? WHERE id = ?", (json.dumps(report), job_id))
    page = client.get(url)
    assert page.status_code == 200 and b"(mobilenet_v2, version" in page.data


def test_a_verdict_as_confident_as_a_coin_toss_is_shown_undecided(client, app, media):
    """Where verdicts as confident were right no more often than a coin toss (the checkpoint's
    reliability), the page says the verdict is undecided and which way it leans, for the video
    and for each face; in a band measured right more often, it shows the verdict as it is."""
    url = post(client, "/detect", media["face_h264"]).headers["Location"]
    assert app.extensions["job_worker"].join(60)
    job_id = url.rstrip("/").split("/")[-1]
    report = app.extensions["job_store"].get(job_id).result
    label, low = report["label"], int(report["confidence"] // 10) / 10

    def shown(lowest_share_right: float) -> str:
        band = {"confidence": [low, low + 0.1], "judged": 40, "right": 22, "share_right": 0.55, "share_right_ci95": [lowest_share_right, 0.7]}
        validation = report["model"]["validation"] or {"clips": 10, "identity_groups": 4, "method": "a split", "qualities": {}}
        report["model"]["validation"] = {**validation, "reliability": {"bands": [band]}}
        with sqlite3.connect(app.config["JOBS_DB"]) as db:
            db.execute("UPDATE jobs SET result = ? WHERE id = ?", (json.dumps(report), job_id))
        page = client.get(url)
        assert page.status_code == 200
        return page.data.decode()

    html = shown(0.4)
    verdict = re.search(r'<p class="verdict verdict-undecided" role="status">(.*?)</p>', html).group(1)
    assert re.sub(r"<[^>]+>", "", verdict).strip() == f"? Undecided: leans {label} {report['confidence']:.1f}% confidence"
    assert html.count('class="tag tag-undecided"') == 2  # the face's entry and its section
    assert f"<title>Undecided, leans {label} – Deepfake detector</title>" in html
    html = shown(0.55)
    assert f'<p class="verdict verdict-{label.lower()}" role="status">' in html and "Undecided" not in html
    assert html.count(f'class="tag tag-{label.lower()}"') == 2 and f"<title>{label} – Deepfake detector</title>" in html


def test_a_photo_gets_a_clear_answer(client, tmp_path):
    photo = tmp_path / "me.jpg"
    cv2.imwrite(str(photo), face_frames(1)[0][..., ::-1])
    api = post(client, "/api/v1/detect", photo, name="me.jpg")
    assert api.status_code == 415 and api.get_json()["error"]["code"] == "not_a_video"
    assert "single picture, not a video" in api.get_json()["error"]["message"]
    page = post(client, "/detect", photo, name="me.jpg")
    assert page.status_code == 415 and b"single picture, not a video" in page.data


def test_no_face_is_answered_as_bad_input_with_its_report(client, media, upload_dir):
    """No verdict is a 4xx with the error's code and message, as any upload that cannot be judged;
    beside it, the report of what was read (and any caveat, such as damage, that may be why)."""
    api = post(client, "/api/v1/detect", media["no_face"])
    body = api.get_json()
    assert api.status_code == 422 and body["error"]["code"] == "no_face"
    assert body["error"]["message"].startswith(f"No face found in the {body['frames']} frames examined, so there is no verdict. Faces are found where")
    assert body["label"] == "NO_FACE" and body["frames"] > 0
    assert body["confidence"] is None and body["p_fake"] is None
    assert body["face_tracks"] == [] and body["frame_scores"] == [] and body["caveats"] == []
    report = client.get(body["report_url"])
    assert report.status_code == 422 and report.get_json() == {k: v for k, v in body.items() if k != "report_url"}
    job = client.get(f"/api/v1/jobs/{body['id']}")  # the analysis itself ran to its end
    assert job.status_code == 200 and job.get_json()["status"] == "done" and job.get_json()["result"]["label"] == "NO_FACE"
    for page in (judged_page(client, media["no_face"]), client.get(f"/results/{body['id']}?partial=1")):
        html = page.data.decode()
        assert page.status_code == 422 and "No face found" in html and 'class="notice caveat"' not in html
        assert re.search(r'<p class="hint no-face">Faces are found where .*? check that part, or more frames\.</p>', html)
    assert "<title>No face found – Deepfake detector</title>" in client.get(f"/results/{body['id']}").data.decode()
    assert list(upload_dir.iterdir()) == []


def test_no_face_in_a_damaged_file_says_the_damage_may_be_why(client, media, tmp_path, upload_dir):
    # one frame broken, whatever the encoder made of the blank frames (bytes overwritten at random
    # in their few kilobytes left some encodings with no frame that decodes)
    answer = post(client, "/api/v1/detect", undecodable_frame_copy(media["no_face"], tmp_path / "damaged.mp4", 10))
    body = answer.get_json()
    assert answer.status_code == 422 and body["error"]["code"] == "no_face"
    assert body["label"] == "NO_FACE" and [c["code"] for c in body["caveats"]] == ["damaged"]
    assert "may be why no face was found" in body["caveats"][0]["message"]
    html = client.get(f"/results/{body['id']}").data.decode()
    note = re.search(r'<p class="notice caveat" role="note" data-caveat="damaged">(.*?)</p>', html, re.S)
    assert "No face found" in html and note and "may be why no face was found" in note.group(1)
    assert list(upload_dir.iterdir()) == []


@pytest.mark.parametrize(
    "clip,status,code",
    [
        ("not_video", 415, "not_a_video"),
        ("truncated", 415, "not_a_video"),
        ("empty", 400, "empty_file"),
        ("sound_only", 415, "not_a_video"),
        ("song", 415, "not_a_video"),  # album art is no video: not judged as one
        ("huge_frames", 413, "frames_too_large"),
    ],
)
def test_bad_files_get_clear_errors(client, media, clip, status, code):
    api = post(client, "/api/v1/detect", media[clip])
    assert api.status_code == status
    error = api.get_json()["error"]
    assert error["code"] == code and error["message"]
    page = post(client, "/detect", media[clip])
    assert page.status_code == status
    assert error["message"].encode() in page.data.replace(b"&#39;", b"'")
    assert b"Traceback" not in page.data


def test_an_mp4_cut_before_its_index_says_why_it_cannot_be_read(client, media):
    error = post(client, "/api/v1/detect", media["truncated"]).get_json()["error"]
    assert error["code"] == "not_a_video" and "video but not their index" in error["message"]
    assert error["message"].endswith("Upload the whole file: as the camera saved it, or a download that finished.")
    other = post(client, "/api/v1/detect", media["not_video"]).get_json()["error"]
    assert "index" not in other["message"] and other["message"].endswith("or an animated GIF or WebP).")


def test_missing_file_field(client):
    response = client.post("/api/v1/detect", data={}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "no_file"


@pytest.mark.parametrize("url", ["/detect", "/api/v1/detect", "/api/v1/jobs"])
def test_several_files_in_one_request_are_refused(client, media, url):
    data = {"video": [(io.BytesIO(media["face_h264"].read_bytes()), f"clip{i}.mp4") for i in range(2)]}
    response = client.post(url, data=data, content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "several_files" and "one video a request" in error["message"]
    # the upload_dir fixture checks that nothing was kept


@pytest.mark.parametrize("name", ["a" * 300 + ".mp4", "é" * 200 + ".mp4", "clip." + "x" * 300, "视频.mp4"])
def test_a_name_too_long_for_the_file_system_is_kept_in_the_report_not_in_the_stored_file(client, media, name):
    body = post(client, "/api/v1/detect", media["face_h264"], name=name).get_json()
    assert body["label"] in ("REAL", "FAKE") and body["filename"] == name


def test_over_limit_upload(client):
    big = b"\0" * (6 * 2**20)
    api = post(client, "/api/v1/detect", data=big)
    assert api.status_code == 413
    assert api.get_json()["error"]["code"] == "too_large"
    page = post(client, "/detect", data=big)
    assert page.status_code == 413
    assert b"5 MB limit" in page.data


def test_unknown_route_is_json_under_api(client):
    response = client.get("/api/v1/nothing")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_a_device_that_is_none_stops_the_app_at_start(tiny_weights, tmp_path):
    with pytest.raises(ValueError, match="use cpu or cuda"):
        create_app(app_config(tiny_weights, tmp_path, DEVICE="gpu"))


def test_no_model_installed(tmp_path, media):
    app = create_app(app_config(tmp_path / "missing.pt", tmp_path))
    client = app.test_client()
    assert b"No model is installed" in client.get("/").data
    assert client.get("/healthz").get_json()["model_installed"] is False
    response = post(client, "/api/v1/detect", media["face_h264"])
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "no_model"
    assert list((tmp_path / "uploads").iterdir()) == []


def test_internal_error_has_no_traceback(app, client, media, monkeypatch):
    from model.detector import Detector

    def boom(self, *args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Detector, "detect", boom)
    response = post(client, "/api/v1/detect", media["face_h264"])
    assert response.status_code == 500
    assert "secret" not in json.dumps(response.get_json())


@pytest.mark.parametrize("failing", ["app.probe_video", "model.jobs.JobStore.create"])
def test_an_upload_is_deleted_whatever_fails_before_its_job_is_queued(client, media, monkeypatch, failing):
    def boom(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(failing, boom)
    response = post(client, "/api/v1/detect", media["face_h264"])
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "internal_error"
    # the upload_dir fixture checks that uploaded_files/ is empty afterwards


def test_every_response_carries_the_security_headers(client, media):
    from app import SECURITY_HEADERS

    responses = {
        "page": client.get("/"),
        "static": client.get("/static/app.js"),
        "api": client.get("/healthz"),
        "error page": client.get("/results/nothing"),
        "api error": post(client, "/api/v1/detect", media["not_video"]),
    }
    for what, response in responses.items():
        assert {name: response.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS, what
    policy = SECURITY_HEADERS["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy


def test_timeline_line_breaks_where_the_face_was_missing():
    from app import score_segments

    scores = [{"time_s": t} for t in (0.5, 1.0, 1.5, 3.0, 3.5, 5.0)]
    assert [[s["time_s"] for s in run] for run in score_segments(scores)] == [[0.5, 1.0, 1.5], [3.0, 3.5], [5.0]]
    assert score_segments(scores[:1]) == [scores[:1]]
