"""ImageWAM Edge: ImageWAM robot policies on NVIDIA Jetson (quantize, flash, calibrate, run, measure)."""
from setuptools import find_packages, setup

TORCH = "torch>=2.4"  # install torch FIRST with the right wheel for the machine (see README); this never pulls a new one
EXPORT = [
    TORCH,
    "diffusers>=0.36",
    "transformers>=4.51",
    "safetensors>=0.4",
    "onnx>=1.17",
    "onnxscript>=0.2",
    "onnxruntime>=1.20",
    "ml_dtypes>=0.4",
    "nvidia-modelopt>=0.33",  # NOT its [onnx] extra: that pins onnx and pulls onnxruntime-gpu and cupy
    "onnxslim>=0.1.76",  # the parts of modelopt's [onnx] extra its ONNX PTQ imports
    "lief",
    "cppimport",
    "onnx-graphsurgeon>=0.5",
    "polygraphy>=0.49",
]
RUNTIME_CPU = ["onnxruntime>=1.20"]
RUNTIME_JETSON = ["onnxruntime-gpu>=1.20", "cuda-python>=12.6"]  # TensorRT comes from JetPack
REALSENSE = ["pyrealsense2>=2.55"]
ARMS = ["pyserial>=3.5", "dynamixel-sdk>=3.7.31", "feetech-servo-sdk>=1.0"]
CALIB = ["opencv-python-headless>=4.8,<5", "matplotlib>=3.7"]  # 5.0 lacks cv2.calibrateHandEye; matplotlib writes the PDF board
PLOT = ["matplotlib>=3.7"]
DEV = ["pytest>=8", "pyyaml>=6"]
# the robot side of a served policy (`policy.backend: remote`); the server has its own environment
# (`imagewam-edge serve --install-env`: nvidia-pytriton pins numpy < 2)
REMOTE = ["tritonclient[grpc]>=2.50"]
# LeRobot v3 datasets (recording export / quantize --calibration DATASET): what lerobot's dataset API imports. lerobot
# itself goes in with `pip install --no-deps "lerobot==0.4.4"`: every release pins torch (<2.11 / <2.12) and would
# replace the installed torch; 0.4.4 is the newest for Python < 3.12 and reads/writes dataset v3.0.
LEROBOT = ["datasets>=4,<5", "pyarrow>=15", "pandas>=2", "av>=14", "jsonlines>=4", "accelerate>=1.0"]

setup(
    name="imagewam-edge",
    version=open("edge/__init__.py").read().split("__version__ = \"")[1].split("\"")[0],
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["edge", "edge.*", "quantize", "quantize.*", "drivers", "drivers.*", "calib", "calib.*"]),
    include_package_data=True,
    package_data={"edge": ["configs/*.yaml", "assets/**/*"], "drivers": ["*.md"]},
    install_requires=["numpy>=1.24", "pyyaml>=6", "pillow>=9"],
    extras_require={
        "export": EXPORT,
        "cpu": RUNTIME_CPU,
        "jetson": RUNTIME_JETSON,
        "realsense": REALSENSE,
        "arms": ARMS,
        "calib": CALIB,
        "plot": PLOT,
        "dev": DEV,
        "remote": REMOTE,
        "lerobot": LEROBOT,  # not in "all": see LEROBOT above
        # everything a CPU workstation (and CI) needs; not for the Jetson runtime image
        "all": sorted(set(EXPORT + RUNTIME_CPU + REALSENSE + ARMS + CALIB + PLOT + DEV + REMOTE)),
    },
    entry_points={"console_scripts": ["imagewam-edge=edge.cli:main"]},
    classifiers=["Programming Language :: Python :: 3.10", "Programming Language :: Python :: 3.11"],
)
