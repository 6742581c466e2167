#!/usr/bin/env bash
# Incremental private build of the CPU addon for development in a shared tree:
#   scripts/dev-build.sh OUT_DIR [extra .cc files...]
# compiles cpp/core/*.cc, the binding runtime (addon, args, memory) and the listed
# files into OUT_DIR/mstar.node. Load it with MSTAR_ADDON=OUT_DIR/mstar.node.
# With no extra files it builds every cpp/ops and cpp/binding source (like binding.gyp).
# Like binding.gyp, it compiles with -DMSTAR_WITH_OPENSLIDE and links libopenslide when
# pkg-config finds openslide; MSTAR_OPENSLIDE=0 builds the stubs instead. Objects of the
# two variants live in separate obj folders, so switching does not mix them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/dev-build.sh OUT_DIR [files...]}
shift
node_inc=$(node -p "require('path').join(process.execPath, '../../include/node')")
addon_inc=$(node -p "require('node-addon-api').include_dir")
flags=(-std=c++17 -O3 -fPIC -fexceptions -frtti -fvisibility=hidden -fno-math-errno -pthread
  -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED
  -I"$node_inc" -I"$addon_inc" -Wall -Wno-unused-function)
libs=()
obj_dir="$out/obj"
if [ "${MSTAR_OPENSLIDE:-1}" != "0" ] && pkg-config --exists openslide 2>/dev/null; then
  # shellcheck disable=SC2207
  flags+=(-DMSTAR_WITH_OPENSLIDE $(pkg-config --cflags openslide))
  # shellcheck disable=SC2207
  libs+=($(pkg-config --libs openslide))
  obj_dir="$out/obj-openslide"
fi
mkdir -p "$obj_dir"
if [ $# -eq 0 ]; then
  sources=(cpp/core/*.cc cpp/ops/*.cc cpp/binding/*.cc)
else
  sources=(cpp/core/*.cc cpp/binding/addon.cc cpp/binding/args.cc cpp/binding/memory.cc "$@")
fi
objects=()
pids=()
for src in "${sources[@]}"; do
  obj="$obj_dir/$(echo "$src" | tr '/' '_').o"
  objects+=("$obj")
  # Rebuild when the source or any header in cpp/ is newer than the object.
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find cpp -name '*.h' -newer "$obj" -print -quit)" ]; then
    g++ "${flags[@]}" -c "$src" -o "$obj" &
    pids+=($!)
    if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  fi
done
for p in "${pids[@]}"; do wait "$p"; done
g++ -shared -pthread -o "$out/mstar.node" "${objects[@]}" "${libs[@]}"
echo "built $out/mstar.node${libs:+ (with OpenSlide)}"
