# Shared setup steps for scripts/*.sh: install what a fresh machine lacks, by package name.

# Debian's dataset-fashion-mnist: the real benchmark set (gzip IDX files under /usr/share/datasets).
FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist
ensure_fashion_mnist() {
  [ -f "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ] && return 0
  command -v apt-get >/dev/null || return 1
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing dataset-fashion-mnist (Debian package)..." >&2
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || return 1
  [ -f "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ]
}
