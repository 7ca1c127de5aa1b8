#!/usr/bin/env bash
# Release notes for $VERSION from the commits since the previous v* tag of
# the repository REPO (default .), grouped by the area each subject starts
# with ("operator: ...", "charts: ...", or a conventional commit's type,
# "feat(api): ..."). Subjects without one are listed under "other".
#
#   VERSION=v1.2.3 hack/release/changelog.sh [REPO] > CHANGELOG.md
set -euo pipefail
VERSION="${VERSION:?set VERSION}"
repo="${1:-.}"

head=HEAD
if git -C "$repo" rev-parse --verify --quiet "refs/tags/$VERSION" >/dev/null; then
  head="$VERSION"
fi
range="$head"
if previous=$(git -C "$repo" describe --tags --abbrev=0 --match 'v*' "$head^" 2>/dev/null); then
  range="$previous..$head"
fi

echo "# Courier $VERSION"
echo
if [[ -n "${previous:-}" ]]; then
  echo "Changes since $previous."
else
  echo "The first release."
fi
git -C "$repo" log --no-merges --format='%h%x09%s' "$range" |
  awk -F '\t' '
    {
      area = "other"; subject = $2
      if (match($2, /^[A-Za-z0-9_.\/(), -]+!?: /)) {
        area = substr($2, 1, RLENGTH - 2); subject = substr($2, RLENGTH + 1)
      }
      if (!(area in seen)) { seen[area] = 1; order[++n] = area }
      lines[area] = lines[area] "- " subject " (" $1 ")\n"
    }
    END { for (i = 1; i <= n; i++) printf "\n## %s\n\n%s", order[i], lines[order[i]] }'
