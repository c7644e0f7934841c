# ImageWAM Edge runtime images for Jetson. Runtime only: TensorRT, cuda-python, onnxruntime-gpu, pyrealsense2, pyserial,
# numpy, pyyaml and this package; no torch. Engines are built ON the device (`imagewam-edge build`).
#
#   Orin (JetPack 6.x: L4T r36.4, CUDA 12.6, TensorRT 10.3, Python 3.10):
#     docker build -f jetson.Dockerfile --target orin --build-arg L4T_VERSION=r36.4.0 -t imagewam-edge:orin .
#   Thor (JetPack 7: CUDA 13, TensorRT 10.13, Python 3.12):
#     docker build -f jetson.Dockerfile --target thor -t imagewam-edge:thor .
#
# Run with the GPU, the cameras' USB bus and the arm's serial port, as the dialout group (not --privileged):
#   docker run --rm -it --runtime nvidia --group-add dialout --group-add plugdev \
#     --device /dev/bus/usb --device /dev/ttyUSB0 -v /opt/imagewam:/opt/imagewam imagewam-edge:orin \
#     imagewam-edge run --config /opt/imagewam/current/config.yaml
ARG L4T_VERSION=r36.4.0
ARG THOR_BASE=nvcr.io/nvidia/tensorrt:25.08-py3-igpu

FROM nvcr.io/nvidia/l4t-jetpack:${L4T_VERSION} AS orin
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3-pip python3-dev python3-libnvinfer build-essential libusb-1.0-0 udev && \
    rm -rf /var/lib/apt/lists/*
WORKDIR /opt/imagewam-edge
COPY requirements/ ./requirements/
# onnxruntime-gpu for JetPack 6 comes from NVIDIA's Jetson AI Lab index; cuda-python is a prebuilt wheel (no build)
RUN pip3 install --extra-index-url https://pypi.jetson-ai-lab.io/jp6/cu126 \
        -r requirements/jetson-runtime.txt -r requirements/jetson-realsense.txt
COPY setup.py README.md ./
COPY edge ./edge
COPY drivers ./drivers
COPY calib ./calib
COPY quantize ./quantize
RUN pip3 install --no-deps . && \
    python3 -c "import tensorrt, pyrealsense2, edge; print('TensorRT', tensorrt.__version__)" && \
    ! python3 -c "import torch" 2>/dev/null
# `docker stop` sends SIGTERM: the control loop does its safe stop (torque as configured, summary, exit 0) well
# inside the 10 s grace. Run with `--cap-add SYS_NICE --ulimit rtprio=99` so its control thread gets SCHED_FIFO.
STOPSIGNAL SIGTERM
CMD ["imagewam-edge", "doctor"]

FROM ${THOR_BASE} AS thor
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3-pip python3-dev build-essential libusb-1.0-0 udev && \
    rm -rf /var/lib/apt/lists/*
WORKDIR /opt/imagewam-edge
COPY requirements/ ./requirements/
# JetPack 7 / CUDA 13: onnxruntime-gpu and cuda-python from the cu130 index; no pyrealsense2 wheel for Python 3.12
# (see requirements/jetson-realsense.txt)
RUN grep -v -e onnxruntime-gpu -e cuda-python requirements/jetson-runtime.txt > /tmp/req.txt && \
    pip3 install --extra-index-url https://pypi.jetson-ai-lab.io/jp7/cu130 -r /tmp/req.txt \
        "onnxruntime-gpu==1.23.0" "cuda-python==13.0.1"
COPY setup.py README.md ./
COPY edge ./edge
COPY drivers ./drivers
COPY calib ./calib
COPY quantize ./quantize
RUN pip3 install --no-deps . && \
    python3 -c "import tensorrt, edge; print('TensorRT', tensorrt.__version__)" && \
    ! python3 -c "import torch" 2>/dev/null
# `docker stop` sends SIGTERM: the control loop does its safe stop (torque as configured, summary, exit 0) well
# inside the 10 s grace. Run with `--cap-add SYS_NICE --ulimit rtprio=99` so its control thread gets SCHED_FIFO.
STOPSIGNAL SIGTERM
CMD ["imagewam-edge", "doctor"]
