# ImageWAM Edge runtime for Jetson Orin (JetPack 6.x: L4T r36.4, CUDA 12.6, TensorRT 10.3, Python 3.10).
# Runtime only: no torch. Engines are built ON the device (`imagewam-edge build`).
#   docker build -f jetson.Dockerfile -t imagewam-edge:r36.4 .
#   docker run --rm -it --runtime nvidia --group-add dialout \
#     --device /dev/ttyUSB0 --device /dev/bus/usb -v /opt/imagewam:/opt/imagewam imagewam-edge:r36.4 imagewam-edge doctor
ARG L4T_VERSION=r36.4.0
FROM nvcr.io/nvidia/l4t-tensorrt:${L4T_VERSION}-devel

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3-pip python3-dev libusb-1.0-0 udev && \
    rm -rf /var/lib/apt/lists/*

WORKDIR /opt/imagewam-edge
COPY setup.py README.md ./
COPY edge ./edge
COPY drivers ./drivers
COPY calib ./calib
COPY quantize ./quantize
# pycuda builds against JetPack's CUDA; onnxruntime-gpu for Jetson comes from NVIDIA's Jetson AI Lab index.
RUN pip3 install --extra-index-url https://pypi.jetson-ai-lab.io/jp6/cu126 \
        ".[jetson,realsense,arms]" && \
    python3 -c "import tensorrt, edge; print('tensorrt', tensorrt.__version__)"

ENTRYPOINT []
CMD ["imagewam-edge", "--help"]
