#!/usr/bin/env bash
# Packs every packable project of the repository and proves the packages are complete.
#
#   1. Finds the packable projects (IsPackable true: the libraries, and a tool with PackAsTool) among all *.csproj
#      files that git tracks, and packs each in Release, as a CI build (deterministic, source paths mapped), with a
#      prerelease version unique to this run: VersionPrefix from Directory.Build.props (or the environment) plus PACK_VERSION_SUFFIX
#      (default ci.<UTC time>.<pid>). Output: artifacts/packages/ (emptied first).
#   2. Checks that each package and its symbol package (.snupkg) exist, and that each package holds its README, the
#      XML documentation of its assembly and SourceLink information (repository and commit in the
#      nuspec, a SourceLink map in the PDB of the symbol package).
#   3. Restores examples/OrderFlow against those packages from a local folder feed (-p:MessagingPackageVersion
#      switches its project references to package references) into a throwaway packages folder, so nothing cached
#      can hide a missing package, builds it and runs it once (in-memory transport; it exits 0 when the flow worked).
#
# Exits non-zero on the first failure. Usage: bash build/pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

# Libraries that must be among the packages whatever else is packable.
expected_libraries=(Messaging Messaging.RabbitMQ Messaging.PubSub Messaging.Aws Messaging.ServiceBus Messaging.Outbox)

out=$root/artifacts/packages
work=$root/artifacts/pack-check
rm -rf "$out" "$work"
mkdir -p "$out" "$work"

prefix=$(dotnet msbuild src/Messaging/Messaging.csproj -getProperty:VersionPrefix ${VersionPrefix:+-p:VersionPrefix=$VersionPrefix})
suffix=${PACK_VERSION_SUFFIX:-ci.$(date -u +%Y%m%d%H%M%S).$$}
version=$prefix-$suffix
echo "== packing version $version into artifacts/packages"

fail() { echo "pack check failed: $*" >&2; exit 1; }

# 1. Pack every packable project.
packed=()      # "PackageId|AssemblyName"
while IFS= read -r project; do
  props=$(dotnet msbuild "$project" -p:Configuration=Release \
    -getProperty:IsPackable -getProperty:PackageId -getProperty:AssemblyName)
  info=$(python3 -c 'import json,sys; p=json.load(sys.stdin)["Properties"]; print("|".join([p["IsPackable"].lower(), p["PackageId"], p["AssemblyName"]]))' <<<"$props")
  IFS='|' read -r packable id assembly <<<"$info"
  [ "$packable" = "true" ] || continue
  echo "-- $id ($project)"
  dotnet pack "$project" -c Release -o "$out" -v q --nologo \
    -p:VersionPrefix="$prefix" -p:VersionSuffix="$suffix" -p:ContinuousIntegrationBuild=true -p:Deterministic=true \
    || fail "dotnet pack $project"
  packed+=("$id|$assembly")
done < <(git ls-files '*.csproj' | sort)

# 2. Check what was packed.
for lib in "${expected_libraries[@]}"; do
  printf '%s\n' "${packed[@]}" | grep -q "^$lib|" || fail "$lib was not packed (is it IsPackable?)"
done
for entry in "${packed[@]}"; do
  IFS='|' read -r id assembly <<<"$entry"
  nupkg=$out/$id.$version.nupkg
  snupkg=$out/$id.$version.snupkg
  [ -f "$nupkg" ] || fail "missing $nupkg"
  [ -f "$snupkg" ] || fail "missing $snupkg"
  python3 - "$nupkg" "$snupkg" "$id" "$assembly" <<'PY' || fail "$id: package contents"
import re, sys, zipfile
nupkg, snupkg, pid, assembly = sys.argv[1:]
problems = []
with zipfile.ZipFile(nupkg) as z:
    names = z.namelist()
    nuspec = z.read(next(n for n in names if n.endswith(".nuspec"))).decode("utf-8")
    if "README.md" not in names:
        problems.append("no README.md at the package root")
    if "<readme>README.md</readme>" not in nuspec:
        problems.append("the nuspec names no readme")
    # A library's documentation is under lib/<framework>/, a tool's beside its assembly under tools/<framework>/any/.
    if not any(re.fullmatch(rf"(lib/[^/]+|tools/[^/]+/[^/]+)/{re.escape(assembly)}\.xml", n) for n in names):
        problems.append(f"no XML documentation {assembly}.xml")
    repo = re.search(r'<repository [^>]*url="([^"]+)"[^>]*commit="([0-9a-f]{40})"', nuspec)
    if not repo:
        problems.append("the nuspec has no repository url with a commit")
    elif not repo.group(1).startswith("https://github.com/"):
        problems.append(f"the repository url is {repo.group(1)}, not a GitHub URL")
with zipfile.ZipFile(snupkg) as z:
    pdbs = [n for n in z.namelist() if n.endswith(f"/{assembly}.pdb")]
    if not pdbs:
        problems.append(f"no {assembly}.pdb in the symbol package")
    for pdb in pdbs:
        data = z.read(pdb)
        if b'"documents"' not in data or b"https://raw.githubusercontent.com/" not in data:
            problems.append(f"{pdb} has no SourceLink map to raw.githubusercontent.com")
for p in problems:
    print(f"{pid}: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
  echo "ok $id: nupkg (README, XML docs, repository commit) and snupkg (SourceLink)"
done

# 3. Build and run the example against the packages, from a local folder feed and an empty packages folder.
echo "== building examples/OrderFlow against the packages"
{
  echo '<?xml version="1.0" encoding="utf-8"?>'
  echo '<configuration>'
  echo '  <packageSources>'
  echo '    <clear />'
  echo "    <add key=\"local-packages\" value=\"$out\" />"
  n=0
  while read -r source; do
    n=$((n + 1))
    echo "    <add key=\"remote$n\" value=\"$source\" />"
  done < <(dotnet nuget list source --format short | awk '$1 == "E" { print $2 }')
  echo '  </packageSources>'
  echo '  <packageSourceMapping>'
  echo '    <packageSource key="local-packages"><package pattern="Messaging" /><package pattern="Messaging.*" /></packageSource>'
  for i in $(seq 1 "$n"); do
    echo "    <packageSource key=\"remote$i\"><package pattern=\"*\" /></packageSource>"
  done
  echo '  </packageSourceMapping>'
  echo '</configuration>'
} > "$work/nuget.config"

example_args=(-p:MessagingPackageVersion="$version" --artifacts-path "$work/out")
dotnet restore examples/OrderFlow/OrderFlow.csproj "${example_args[@]}" \
  --configfile "$work/nuget.config" --packages "$work/packages" -v q \
  || fail "restoring OrderFlow against the packages"
for lib in "${expected_libraries[@]}"; do
  lower=$(echo "$lib" | tr '[:upper:]' '[:lower:]')
  [ -f "$work/packages/$lower/$version/$lower.$version.nupkg" ] || fail "OrderFlow's restore did not take $lib $version from the local feed"
done
dotnet build examples/OrderFlow/OrderFlow.csproj -c Release --no-restore "${example_args[@]}" -v q --nologo \
  || fail "building OrderFlow against the packages"
dll=$(find "$work/out/bin/OrderFlow" -name OrderFlow.dll -path '*release*' | head -n 1)
[ -n "$dll" ] || fail "no OrderFlow.dll under $work/out/bin"
echo "== running OrderFlow (in-memory transport)"
timeout 180 dotnet "$dll" --OrderFlow:PrometheusPort=0 || fail "OrderFlow built from the packages did not complete its flow"
# The metrics endpoint of the example, from the packages: continuous mode, scraped until the library's series show up.
echo "== scraping OrderFlow's Prometheus endpoint"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
timeout 120 dotnet "$dll" --OrderFlow:Continuous=true --OrderFlow:PrometheusPort="$port" --Messaging:Metrics:BacklogPollingInterval=00:00:01 \
  > "$work/orderflow-continuous.log" 2>&1 &
example_pid=$!
scraped=""
for _ in $(seq 1 60); do
  if curl -sf "http://localhost:$port/metrics" -o "$work/metrics.txt" \
    && grep -q '^messaging_client_consumed_messages_total{' "$work/metrics.txt" \
    && grep -q '^messaging_process_duration_seconds_bucket{' "$work/metrics.txt" \
    && grep -q '^messaging_subscription_backlog{' "$work/metrics.txt" \
    && grep -q '^messaging_process_dead_lettered_messages_total{' "$work/metrics.txt"; then
    scraped=yes
    break
  fi
  sleep 1
done
kill "$example_pid" 2>/dev/null; wait "$example_pid" 2>/dev/null
[ -n "$scraped" ] || { tail -n 20 "$work/orderflow-continuous.log"; fail "OrderFlow's /metrics did not show the library's throughput, duration, backlog and dead-letter series"; }
echo "ok /metrics: $(grep -c '^messaging_' "$work/metrics.txt") messaging series"
echo "pack check passed: ${#packed[@]} packages of version $version"
