#!/usr/bin/env bash
# The console's charting library is Apache ECharts' prebuilt ES module, vendored into the Python
# package so the apps need no build step and no CDN. package-lock.json pins it.
#   web/vendor.sh          reinstall from the lock file (npm ci) and copy the files into the package
#   web/vendor.sh --check  reinstall and fail if the vendored copies differ by a single byte (CI)
set -euo pipefail
cd "$(dirname "$0")"
VENDOR=../src/alliance/web/console/vendor
FILES=(
  "node_modules/echarts/dist/echarts.esm.min.mjs echarts.esm.min.js"
  "node_modules/echarts/LICENSE LICENSE-echarts.txt"
  "node_modules/echarts/NOTICE NOTICE-echarts.txt"
  "node_modules/echarts/licenses/LICENSE-d3 LICENSE-d3.txt"
  "node_modules/zrender/LICENSE LICENSE-zrender.txt"
  "node_modules/tslib/LICENSE.txt LICENSE-tslib.txt"
)

npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
status=0
for pair in "${FILES[@]}"; do
  read -r source target <<<"$pair"
  if [[ "${1:-}" == "--check" ]]; then
    if ! cmp -s "$source" "$VENDOR/$target"; then
      echo "vendored $target differs from $source of a clean npm ci (run web/vendor.sh)" >&2
      status=1
    fi
  else
    mkdir -p "$VENDOR"
    cp "$source" "$VENDOR/$target"
  fi
done
[[ "${1:-}" == "--check" && $status == 0 ]] && echo "vendored browser libraries match web/package-lock.json"
exit $status
