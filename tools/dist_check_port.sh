# Sourced by dist_train.sh and dist_test.sh: on the master node (NODE_RANK 0), PORT must be free.
# torchrun stopped with a 40-line traceback ending in "EADDRINUSE" when another run (or any
# program) held it, e.g. two jobs on one machine, both on the default 29500.
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || (( PORT < 1 || PORT > 65535 )); then
    echo "error: PORT='$PORT': the master's port must be a number from 1 to 65535" >&2
    exit 2
fi
if [ "$NODE_RANK" = 0 ]; then
    FREE_PORT=$(${PYTHON:-python} -c '
import socket, sys

def bind(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", port))
    return s

try:
    bind(int(sys.argv[1])).close()
except OSError:
    s = bind(0)
    print(s.getsockname()[1])
' "$PORT" 2>/dev/null) || FREE_PORT=""
    if [ -n "$FREE_PORT" ]; then
        echo "error: PORT=$PORT is in use on this machine (another distributed run? each run needs its own port); e.g. PORT=$FREE_PORT bash $0 ..." >&2
        exit 2
    fi
fi
