# Sourced by scripts: `need_debian_packages WHO PKG...` installs the Debian packages that are
# missing when run as root; otherwise names them and exits.
need_debian_packages() {
    local who=$1
    shift
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [ "$(id -u)" = 0 ]; then
        echo "$who: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "$who: missing Debian packages: ${missing[*]}" >&2
        echo "  run: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
}
