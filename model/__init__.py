"""Deepfake video detection: frame sampling, face cropping, a CNN+LSTM network, and a detector."""
import warnings

# face_recognition_models imports pkg_resources, which warns on every import.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
