# Sourced by the kit's sbatch scripts, after they found the kit in $REPO (see any *.sbatch).
# Sets: the working folder (the kit), GPUS and CPUS this job may use on this node, PORT (free for
# this job: two jobs on one node never share a rendezvous or a lab server), JOB (the job id).
cd "$REPO"
if [ ! -x .venv/bin/python ]; then
    echo "labkit: no .venv in $REPO. Compute nodes are often offline: run 'make install' in $REPO on a login node, then submit again." >&2
    exit 2
fi
[ .venv/.installed -nt pyproject.toml ] || echo "labkit: note: pyproject.toml changed since the last 'make install'; run it again on a login node to update .venv (this job uses the old one)." >&2

# GPUs: what SLURM allocated to this job (--gres=gpu:N), never what the node happens to have.
if [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then
    GPUS=$SLURM_GPUS_ON_NODE
elif [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "$CUDA_VISIBLE_DEVICES" != NoDevFiles ]; then
    GPUS=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)
else
    GPUS=0
fi
[ "$GPUS" -gt 0 ] || export CUDA_VISIBLE_DEVICES=""   # no GPU asked for: use none (on a shared node, they are someone else's)
# CPUs: the cores this job may run on (SLURM's binding, where the cluster binds), at most those it asked for.
CPUS=$(nproc)
[ -n "${SLURM_CPUS_PER_TASK:-}" ] && [ "$SLURM_CPUS_PER_TASK" -lt "$CPUS" ] && CPUS=$SLURM_CPUS_PER_TASK
JOB=${SLURM_JOB_ID:-local-$(date +%Y%m%d-%H%M%S)}
PORT=${LABKIT_PORT:-$(( 20000 + ${SLURM_JOB_ID:-$$} % 10000 ))}   # below Linux's ephemeral range (32768+)
export LABKIT_GPUS=$GPUS LABKIT_CPUS=$CPUS
