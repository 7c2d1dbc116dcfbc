"""Pack a root filesystem and its metadata into an LXD unified tarball; fingerprint it."""
import hashlib
import os
import shutil
import subprocess
import tempfile

from nova_lxd.image import formats
from nova_lxd.image.errors import PackError
from nova_lxd.image import metadata as metadata_mod
from nova_lxd.image import progress as progress_mod

COMPRESSORS = {
    # -n: no name or timestamp in the gzip header, so identical input gives identical output
    'gz': (['gzip', '-n', '-6', '-c'], '.tar.gz'),
    'xz': (['xz', '-T2', '-6', '-c'], '.tar.xz'),
}


def suffix(compression):
    try:
        return COMPRESSORS[compression][1]
    except KeyError:
        raise PackError('unknown compression %r (choose from %s)'
                        % (compression, ', '.join(sorted(COMPRESSORS))))


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def tree_size(path):
    """Bytes of regular files under path (not following symlinks): the packing estimate."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, name)):
                total += st.st_size + 512
    return total


def pack_unified(rootfs, meta_dir, out_path, compression='gz', progress=None, estimate=None,
                 fstab_override=False):
    """Write out_path: meta_dir's metadata.yaml and templates/ plus rootfs/ from `rootfs`.

    Runs GNU tar on the host (nothing inside the rootfs is executed); owners stay numeric,
    xattrs (file capabilities) and ACLs are kept. The file appears complete or not at all.
    fstab_override: when true, rootfs/etc/fstab comes from meta_dir/rootfs/etc/fstab and the
    original is kept as rootfs/etc/fstab.disk-image (a disk image's mounts make no sense in
    a container).
    Returns the image fingerprint (sha256 of the tarball, as LXD computes it).
    """
    suffix(compression)  # validates
    # tar takes each -C relative to the previous one: absolute paths only
    rootfs, meta_dir, out_path = (os.path.abspath(p) for p in (rootfs, meta_dir, out_path))
    compress_cmd = COMPRESSORS[compression][0]
    progress = progress or progress_mod.silent()
    progress.reset(estimate if estimate is not None else tree_size(rootfs))
    tar_cmd = ['tar', '--create', '--file', '-', '--sort=name', '--numeric-owner',
               '--xattrs', "--xattrs-include=*", '--acls', '--one-file-system',
               '-C', meta_dir, 'metadata.yaml', 'templates']
    if fstab_override:
        # the first matching expression wins: the original fstab is renamed
        tar_cmd += ['--transform', r's,^\./etc/fstab$,rootfs/etc/fstab.disk-image,S']
    # an image's /dev stays empty: the container manager populates it (and device nodes in an
    # image are refused by the backend)
    tar_cmd += ['--anchored', '--exclude=./dev/*']
    # './x' -> 'rootfs/x'; symlink targets (flag S) are left alone
    tar_cmd += ['-C', rootfs, '--transform', r's,^\.,rootfs,S', '.']
    if fstab_override:
        tar_cmd += ['-C', meta_dir, 'rootfs/etc/fstab']
    partial = out_path + '.partial'
    tar = compressor = None
    try:
        with open(partial, 'wb') as out:
            compressor = subprocess.Popen(compress_cmd, stdin=subprocess.PIPE, stdout=out)
            tar = subprocess.Popen(tar_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            done = 0
            for chunk in iter(lambda: tar.stdout.read(1 << 20), b''):
                compressor.stdin.write(chunk)
                done += len(chunk)
                progress.update(done)
            compressor.stdin.close()
            tar_err = tar.stderr.read().decode(errors='replace')
            if tar.wait() != 0:
                raise PackError('tar failed: %s' % tar_err.strip()[-2000:])
            if compressor.wait() != 0:
                raise PackError('%s failed with status %s' % (compress_cmd[0],
                                                              compressor.returncode))
        progress.message('packed %d MiB of files into %s' % (done >> 20, out_path))
        os.rename(partial, out_path)
    finally:
        for proc in (tar, compressor):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        for proc in (tar,):
            if proc is not None:
                proc.stdout.close()
                proc.stderr.close()
        if os.path.exists(partial):
            os.unlink(partial)
    return sha256_file(out_path)


def pack_image(rootfs, metadata, out_path, compression='gz', progress=None, estimate=None,
               fstab_override=None):
    """Write metadata (a dict for metadata.yaml) and templates next to rootfs into out_path.

    fstab_override: text that replaces the rootfs's /etc/fstab in the tarball (see pack_unified).
    """
    meta_dir = tempfile.mkdtemp(prefix='.nova-lxd-meta-', dir=os.path.dirname(out_path) or '.')
    try:
        metadata_mod.write_metadata_dir(meta_dir, metadata)
        if fstab_override is not None:
            os.makedirs(os.path.join(meta_dir, 'rootfs', 'etc'))
            with open(os.path.join(meta_dir, 'rootfs', 'etc', 'fstab'), 'w') as f:
                f.write(fstab_override)
        return pack_unified(rootfs, meta_dir, out_path, compression, progress, estimate,
                            fstab_override=fstab_override is not None)
    finally:
        shutil.rmtree(meta_dir, ignore_errors=True)


def host_architecture():
    """LXD name of this host's architecture, from dpkg (as the packages we build from)."""
    dpkg_arch = subprocess.run(['dpkg', '--print-architecture'], check=True, text=True,
                               capture_output=True).stdout.strip()
    return formats.DPKG_TO_LXD_ARCH.get(dpkg_arch, dpkg_arch)
