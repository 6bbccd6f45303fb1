//! Command-line syntax (clap derive), mirroring qemu-img's commands and short flags.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples (LPIC-3 351.5, virtual machine disk image management):
  Create a 22 GiB thin-provisioned qcow2 disk:
      vdisk create -f qcow2 disk.qcow2 22G
  Create an overlay that keeps a base image unchanged:
      vdisk create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2
  Show what an image is (format, sizes, backing file, snapshots):
      vdisk info disk.qcow2
      vdisk info --backing-chain --output=json overlay.qcow2
  Convert a VMware or VirtualBox disk to raw, with a progress bar:
      vdisk convert -p -f vmdk -O raw disk.vmdk disk.raw
      vdisk convert -O raw disk.vdi disk.raw
  Copy a physical disk into an image:
      vdisk convert -O raw /dev/sdb disk.raw
  See which parts of a disk hold data and where they are stored:
      vdisk map --output=json disk.qcow2
  Check an image's metadata for errors and leaked clusters:
      vdisk check disk.qcow2
  Compare two images' contents:
      vdisk compare disk.raw disk.qcow2
  List internal snapshots:
      vdisk snapshot -l disk.qcow2
  Grow a disk by 10 GiB:
      vdisk resize disk.raw +10G
  Copy the first 64 MiB of a disk into a new qcow2 image:
      vdisk dd -O qcow2 bs=1M count=64 if=disk.raw of=head.qcow2
  List the partitions inside an image, in any format (vdisk only):
      vdisk partitions disk.qcow2
  Read the files inside an image, mounted as the guest's /etc/fstab mounts them (vdisk only,
  as libguestfs's virt-filesystems, virt-df, virt-ls and virt-cat; ext2/3/4, XFS and FAT, on
  partitions or LVM logical volumes):
      vdisk filesystems -l disk.qcow2
      vdisk df disk.qcow2
      vdisk ls -l disk.qcow2 /etc
      vdisk cat disk.qcow2 /etc/fstab

Exit codes: 0 success, 1 error; check: 0 clean, 2 corruptions, 3 leaks, 63 no check for the format;
compare: 0 identical, 1 different, 2 open error.";

/// vdisk: inspect, create, convert, compare and check virtual machine disk images
/// (raw, qcow2, VMDK, VDI, VHD, VHDX) with qemu-img's commands and flags.
#[derive(Debug, Parser)]
#[command(
    name = "vdisk",
    version,
    after_help = EXAMPLES,
    propagate_version = true,
    // Unambiguous abbreviations of long options, as qemu-img (getopt_long) takes them.
    infer_long_args = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Output style, as qemu-img's `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Display information about an image: format, virtual and disk size, cluster size, backing file,
    /// snapshots and format-specific details.
    Info {
        /// Image format (probed when omitted).
        #[arg(short = 'f', long = "format")]
        format: Option<String>,
        /// Output style.
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        /// Show every image of the backing chain, top first.
        #[arg(short = 'b', long)]
        backing_chain: bool,
        /// Open without locking (accepted for compatibility; vdisk never locks or writes when inspecting).
        #[arg(short = 'U', long = "force-share")]
        force_share: bool,
        /// FILENAME: QEMU's option string (`driver=qcow2,file.filename=x.qcow2`) instead of a
        /// file name.
        #[arg(long = "image-opts")]
        image_opts: bool,
        /// The image.
        filename: PathBuf,
    },
    /// Show where each range of the virtual disk comes from: data at a host offset, zeros,
    /// unallocated, compressed, or a backing image (depth).
    Map {
        #[arg(short = 'f', long = "format")]
        format: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        /// First guest byte to map.
        #[arg(
            short = 's',
            long = "start-offset",
            default_value = "0",
            allow_hyphen_values = true
        )]
        start_offset: String,
        /// How many bytes to map (default: to the end).
        #[arg(short = 'l', long = "max-length", allow_hyphen_values = true)]
        max_length: Option<String>,
        #[arg(short = 'U', long = "force-share")]
        force_share: bool,
        /// FILENAME: QEMU's option string (`driver=qcow2,file.filename=x.qcow2`) instead of a
        /// file name.
        #[arg(long = "image-opts")]
        image_opts: bool,
        filename: PathBuf,
    },
    /// vdisk only: the partition table inside the image (MBR with logical partitions, or GPT),
    /// read through any format without converting it; `--output=json` prints what
    /// `sfdisk --json` prints for the same disk as a raw file.
    Partitions {
        #[arg(short = 'f', long = "format")]
        format: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        #[arg(short = 'U', long = "force-share")]
        force_share: bool,
        /// FILENAME: QEMU's option string (`driver=qcow2,file.filename=x.qcow2`) instead of a
        /// file name.
        #[arg(long = "image-opts")]
        image_opts: bool,
        filename: PathBuf,
    },
    /// vdisk only (as libguestfs's virt-filesystems): the filesystems inside the image, on the
    /// whole disk or in its partitions, read through any format.
    Filesystems {
        #[command(flatten)]
        guest: GuestArgs,
        /// A table: device, type, filesystem type, label, UUID and size.
        #[arg(short = 'l', long = "long")]
        long: bool,
        /// Sizes in powers of 1024 with a unit (128M, 3.9G).
        #[arg(short = 'H', long = "human-readable")]
        human: bool,
        /// List the filesystems (what is listed when no other list is asked for).
        #[arg(long = "filesystems")]
        list_filesystems: bool,
        /// List the LVM logical volumes (`/dev/VG/LV`), with or without a filesystem; with
        /// `-l`, each one's UUID (without dashes, as libguestfs gives it) and size.
        #[arg(long = "lvs", visible_aliases = ["logvols", "logical-volumes"])]
        list_lvs: bool,
        /// List the LVM physical volumes (the disk or its partitions); with `-l`, each one's
        /// UUID and the size of its device.
        #[arg(long = "pvs", visible_aliases = ["physvols", "physical-volumes"])]
        list_pvs: bool,
    },
    /// vdisk only (as virt-df): how full each filesystem inside the image is, as `df` would
    /// show it once mounted.
    Df {
        #[command(flatten)]
        guest: GuestArgs,
        /// Sizes in powers of 1024 with a unit instead of 1K blocks.
        #[arg(short = 'H', long = "human-readable")]
        human: bool,
        /// Inodes instead of blocks.
        #[arg(short = 'i', long = "inodes")]
        inodes: bool,
    },
    /// vdisk only (as virt-ls): list a directory inside the image's filesystems, mounted where the
    /// guest's /etc/fstab mounts them (or as -m says).
    Ls {
        #[command(flatten)]
        guest: GuestArgs,
        /// Mode, links, owner, group, size, time and link targets, as `ls -l`.
        #[arg(short = 'l', long = "long")]
        long: bool,
        /// Everything below the directory, with full paths.
        #[arg(short = 'R', long = "recursive")]
        recursive: bool,
        /// The directory (or file) inside the image (any bytes: guest names need not be
        /// UTF-8).
        path: std::ffi::OsString,
    },
    /// vdisk only (as virt-cat): print files inside the image's filesystems.
    Cat {
        #[command(flatten)]
        guest: GuestArgs,
        /// Files inside the image (absolute paths, any bytes).
        #[arg(required = true)]
        paths: Vec<std::ffi::OsString>,
    },
    /// Create a new image. The size may be omitted when a backing file gives it.
    Create {
        /// Format of the new image (default raw).
        #[arg(short = 'f', long = "format", default_value = "raw")]
        format: String,
        /// Format options, key=value[,key=value...]; `-o help` lists them.
        #[arg(short = 'o', long = "options")]
        options: Vec<String>,
        /// Backing file of the new image.
        #[arg(short = 'b', long = "backing")]
        backing: Option<String>,
        /// Format of the backing file.
        #[arg(short = 'F', long = "backing-format")]
        backing_format: Option<String>,
        /// Do not open the backing file (its size must then be given).
        #[arg(short = 'u', long = "no-backing-check", alias = "backing-unsafe")]
        unsafe_backing: bool,
        /// Quiet: print nothing on success.
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
        /// The new image (not needed with `-o help`).
        filename: Option<PathBuf>,
        /// Virtual size, e.g. 22G, 512M, 1T (k, M, G, T, P, E are 1024-based).
        size: Option<String>,
    },
    /// Copy one or more images (concatenated) into a new image, converting the format.
    Convert(ConvertArgs),
    /// Copy an image, or part of it (dd operands: bs=, count=, skip=), into a new image, converting
    /// the format; every byte is written, as qemu-img dd writes it.
    Dd(DdArgs),
    /// Add, remove, clear, enable, disable or merge the persistent dirty bitmaps of a qcow2 image
    /// (which clusters were written since a backup), in the order given: `bitmap --add -g 64k
    /// disk.qcow2 b0`; `vdisk bitmap --help` lists the options
    #[command(disable_help_flag = true)]
    Bitmap {
        /// ( --add [-g SIZE] | --remove | --clear | --enable | --disable | --merge SOURCE [-b
        /// SRC_FILE [-F SRC_FMT]] )... [-f FMT | --image-opts] FILE BITMAP
        #[arg(
            allow_hyphen_values = true,
            trailing_var_arg = true,
            num_args = 0..,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Time COUNT read (or, with -w, write) requests of BUFFER_SIZE bytes, DEPTH at a time, from
    /// OFFSET on in steps of STEP_SIZE (wrapping before the end), as qemu-img bench does.
    Bench(BenchArgs),
    /// Check whether two images have the same content.
    Compare {
        /// Format of the first image.
        #[arg(short = 'f', long = "a-format", alias = "left-format")]
        format_a: Option<String>,
        /// Format of the second image.
        #[arg(short = 'F', long = "b-format", alias = "right-format")]
        format_b: Option<String>,
        /// Strict mode: sizes and allocation must match too.
        #[arg(short = 's', long = "strict")]
        strict: bool,
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
        /// Show progress: qemu-img's lines, `    (P/100%)` ended by a carriage return.
        #[arg(short = 'p', long = "progress")]
        progress: bool,
        #[arg(short = 'U', long = "force-share")]
        force_share: bool,
        /// Cache mode of the images (checked as qemu-img checks it; vdisk reads through the page
        /// cache whatever the mode).
        #[arg(short = 'T', long = "cache", default_value = "writeback")]
        cache: String,
        /// both images: QEMU's option string (`driver=qcow2,file.filename=x.qcow2`) instead of a
        /// file name.
        #[arg(long = "image-opts")]
        image_opts: bool,
        first: PathBuf,
        second: PathBuf,
    },
    /// Check an image's metadata for corruptions and leaked clusters (read-only unless -r is given).
    Check {
        #[arg(short = 'f', long = "format")]
        format: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        /// Repair qcow2 images: `leaks` frees leaked clusters, `all` also fixes refcount errors.
        #[arg(short = 'r', long = "repair")]
        repair: Option<String>,
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
        #[arg(short = 'U', long = "force-share")]
        force_share: bool,
        /// Cache mode of the images (checked as qemu-img checks it; vdisk reads through the page
        /// cache whatever the mode).
        #[arg(short = 'T', long = "cache", default_value = "writeback")]
        cache: String,
        /// FILENAME: QEMU's option string (`driver=qcow2,file.filename=x.qcow2`) instead of a
        /// file name.
        #[arg(long = "image-opts")]
        image_opts: bool,
        filename: PathBuf,
    },
    /// List (-l), create (-c), apply (-a) or delete (-d) internal snapshots of a qcow2 image.
    Snapshot {
        /// List the snapshots.
        #[arg(short = 'l', long = "list")]
        list: bool,
        /// Create a snapshot.
        #[arg(short = 'c', long = "create")]
        create: Option<String>,
        /// Apply (revert to) a snapshot.
        #[arg(short = 'a', long = "apply")]
        apply: Option<String>,
        /// Delete a snapshot.
        #[arg(short = 'd', long = "delete")]
        delete: Option<String>,
        #[arg(short = 'f', long = "format")]
        format: Option<String>,
        #[arg(short = 'U', long = "force-share")]
        force_share: bool,
        /// Quiet (snapshot prints nothing but -l's list anyway).
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
        /// FILENAME: QEMU's option string (`driver=qcow2,file.filename=x.qcow2`) instead of a
        /// file name.
        #[arg(long = "image-opts")]
        image_opts: bool,
        filename: PathBuf,
    },
    /// Change format options of an existing qcow2 image: compat (0.10 or 1.1), lazy_refcounts,
    /// refcount_bits, size, data_file and data_file_raw (`-o help` lists them).
    Amend {
        #[arg(short = 'f', long = "format")]
        format: Option<String>,
        /// Options to change, key=value[,key=value...].
        #[arg(short = 'o', long = "options", required = true)]
        options: Vec<String>,
        /// Cache mode of the image (checked as qemu-img checks it; vdisk goes through the page
        /// cache whatever the mode, and flushes before it returns).
        #[arg(short = 't', long = "cache", default_value = "writeback")]
        cache: String,
        /// Quiet (amend prints nothing on success anyway).
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
        /// Show progress: qemu-img's lines, 0% before the change and 100% after it.
        #[arg(short = 'p', long = "progress")]
        progress: bool,
        /// Allow unsafe operations (accepted for compatibility: qemu-img needs it only to change
        /// the keys of an encrypted image, which vdisk does not write).
        #[arg(long = "force")]
        force: bool,
        /// FILENAME: QEMU's option string (`driver=qcow2,file.filename=x.qcow2`) instead of a
        /// file name.
        #[arg(long = "image-opts")]
        image_opts: bool,
        filename: Option<PathBuf>,
    },
    /// Change the backing file of a qcow2 image. Safe mode first copies into the image every cluster
    /// whose content would change with the new backing file; -u only rewrites the reference (the new
    /// backing file must hold the same data). `-b ""` removes the backing file (safe mode: flattens).
    Rebase {
        #[arg(short = 'f', long = "format")]
        format: Option<String>,
        /// Unsafe mode: rewrite the backing reference only, copy no data.
        #[arg(short = 'u', long = "unsafe", alias = "backing-unsafe")]
        unsafe_mode: bool,
        /// The new backing file ("" for none; none either when -u is given without -b).
        #[arg(short = 'b', long = "backing")]
        backing: Option<String>,
        /// Format of the new backing file.
        #[arg(short = 'F', long = "backing-format")]
        backing_format: Option<String>,
        /// Store the clusters copied into the image compressed (with the image's compression
        /// type), as `qemu-img rebase -c` does.
        #[arg(short = 'c', long = "compress")]
        compress: bool,
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
        /// Show progress: qemu-img's lines, a step for each 2 MiB of the image looked at.
        #[arg(short = 'p', long = "progress")]
        progress: bool,
        #[arg(short = 'U', long = "force-share")]
        force_share: bool,
        /// Cache mode of the image (checked as qemu-img checks it; vdisk goes through the page
        /// cache whatever the mode, and flushes before it returns).
        #[arg(short = 't', long = "cache", default_value = "writeback")]
        cache: String,
        /// Cache mode of the backing files (checked as qemu-img checks it).
        #[arg(short = 'T', long = "backing-cache", default_value = "writeback")]
        backing_cache: String,
        /// FILENAME: QEMU's option string (`driver=qcow2,file.filename=x.qcow2`) instead of a
        /// file name.
        #[arg(long = "image-opts")]
        image_opts: bool,
        filename: PathBuf,
    },
    /// Write the data of a qcow2 overlay into its backing image, then empty the overlay (unless -d).
    Commit {
        #[arg(short = 'f', long = "format")]
        format: Option<String>,
        /// Commit into this image of the backing chain instead of the direct backing file (implies -d).
        #[arg(short = 'b', long = "base")]
        base: Option<PathBuf>,
        /// Keep the overlay's data (do not empty it).
        #[arg(short = 'd', long = "no-drop", alias = "drop")]
        keep: bool,
        /// Rate limit of the writes to the base, in bytes a second (`1M`; 0 for none).
        #[arg(short = 'r', long = "rate", allow_hyphen_values = true)]
        rate: Option<String>,
        /// Show progress: qemu-img's lines, from the share of the data written to the base.
        #[arg(short = 'p', long = "progress")]
        progress: bool,
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
        /// Cache mode of the image (checked as qemu-img checks it; vdisk goes through the page
        /// cache whatever the mode, and flushes before it returns).
        #[arg(short = 't', long = "cache", default_value = "writeback")]
        cache: String,
        /// FILENAME: QEMU's option string (`driver=qcow2,file.filename=x.qcow2`) instead of a
        /// file name.
        #[arg(long = "image-opts")]
        image_opts: bool,
        filename: PathBuf,
    },
    /// Calculate the file size a new image needs: for a new empty image of --size, or for converting
    /// FILE (qcow2 and raw).
    Measure {
        /// Output format (default raw).
        #[arg(short = 'O', long = "target-format", default_value = "raw")]
        output_format: String,
        /// Output format options.
        #[arg(short = 'o', long = "options")]
        options: Vec<String>,
        /// Size of a new empty image.
        #[arg(long)]
        size: Option<String>,
        /// Format of FILE.
        #[arg(short = 'f', long = "format")]
        format: Option<String>,
        /// Read an internal snapshot of FILE.
        #[arg(short = 'l', long = "snapshot")]
        snapshot: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        #[arg(short = 'U', long = "force-share")]
        force_share: bool,
        /// FILENAME: QEMU's option string (`driver=qcow2,file.filename=x.qcow2`) instead of a
        /// file name.
        #[arg(long = "image-opts")]
        image_opts: bool,
        /// The image to be converted.
        filename: Option<PathBuf>,
    },
    /// Change the virtual size of a raw, qcow2 or VDI image: SIZE, +SIZE or -SIZE (shrinking needs --shrink).
    Resize {
        #[arg(short = 'f', long = "format")]
        format: Option<String>,
        /// Allow the image to become smaller (data past the new end is lost).
        #[arg(long)]
        shrink: bool,
        /// Preallocation of new space for raw images: off, falloc or full.
        #[arg(long)]
        preallocation: Option<String>,
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
        /// FILENAME: QEMU's option string (`driver=qcow2,file.filename=x.qcow2`) instead of a
        /// file name.
        #[arg(long = "image-opts")]
        image_opts: bool,
        filename: PathBuf,
        /// New size, or +N / -N relative to the current size.
        #[arg(allow_hyphen_values = true)]
        size: String,
    },
}

impl Command {
    /// Whether `-U` (QEMU's `force-share=on`) was given: images opened read-only then share
    /// every permission, so that an image a VM is using can be read.
    pub fn force_share(&self) -> bool {
        match self {
            Command::Info { force_share, .. }
            | Command::Map { force_share, .. }
            | Command::Partitions { force_share, .. }
            | Command::Compare { force_share, .. }
            | Command::Check { force_share, .. }
            | Command::Snapshot { force_share, .. }
            | Command::Rebase { force_share, .. }
            | Command::Measure { force_share, .. } => *force_share,
            Command::Convert(a) => a.force_share,
            Command::Dd(a) => a.force_share,
            Command::Bench(a) => a.force_share,
            _ => false,
        }
    }
}

/// `vdisk convert` arguments.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// Source format (probed when omitted).
    #[arg(short = 'f', long = "format", alias = "source-format")]
    pub format: Option<String>,
    /// Output format (default raw).
    #[arg(short = 'O', long = "target-format", alias = "output-format")]
    pub output_format: Option<String>,
    /// The output image (the last file) is QEMU's option string
    /// (`driver=qcow2,file.filename=x.qcow2`); needs -n.
    #[arg(long = "target-image-opts")]
    pub target_image_opts: bool,
    /// Output format options; `-o help` lists them.
    #[arg(short = 'o', long = "options", alias = "target-options")]
    pub options: Vec<String>,
    /// Show a progress bar on a terminal.
    #[arg(short = 'p', long = "progress")]
    pub progress: bool,
    /// Number of parallel workers (qemu-img's coroutines), 1 to 16; no more than one per core
    /// while decompressing.
    #[arg(
        short = 'm',
        long = "parallel",
        default_value = "8",
        allow_hyphen_values = true
    )]
    pub parallel: String,
    /// Allow out-of-order writes to the target.
    #[arg(short = 'W', long = "allow-out-of-order", alias = "oob-writes")]
    pub out_of_order: bool,
    /// Zero runs of at least this many bytes become holes (default 4k; 0 writes everything).
    #[arg(short = 'S', long = "sparse-size", allow_hyphen_values = true)]
    pub sparse_size: Option<String>,
    /// Copy offloading: data stored uncompressed in a host file is copied by the kernel
    /// (copy_file_range) without zero detection, into raw and qcow2 outputs; elsewhere the data is
    /// read and written as usual.
    #[arg(short = 'C', long = "copy-range-offloading")]
    pub copy_range: bool,
    /// vdisk only: read every source byte with pread instead of through a memory map of the
    /// source file (by default, data stored uncompressed in a file is scanned and written straight
    /// from the page cache, which saves a copy).
    #[arg(long = "no-source-map")]
    pub no_source_map: bool,
    /// Rate limit of the writes to the target, in bytes a second (`1M`, `512k`; 0 for none),
    /// enforced as qemu-img's throttling does it (a tenth of a second's worth may go at once).
    #[arg(short = 'r', long = "rate", allow_hyphen_values = true)]
    pub rate: Option<String>,
    /// Salvaging mode: a source sector that cannot be read is written as zeros, with a warning
    /// naming its offset, and the conversion goes on (exit 0), as qemu-img's --salvage does.
    #[arg(long)]
    pub salvage: bool,
    /// Also copy the persistent bitmaps of a qcow2 source into the qcow2 target (name,
    /// granularity, enabled or not, and their bits), as qemu-img's --bitmaps does.
    #[arg(long)]
    pub bitmaps: bool,
    /// With --bitmaps: skip inconsistent bitmaps (with a warning) instead of failing.
    #[arg(long = "skip-broken-bitmaps")]
    pub skip_broken_bitmaps: bool,
    /// Write into an existing target instead of creating it.
    #[arg(short = 'n', long = "no-create")]
    pub no_create: bool,
    /// Compress the output (qcow2, VMDK streamOptimized).
    #[arg(short = 'c', long = "compress")]
    pub compress: bool,
    /// Backing file of the output: only what differs from it is written.
    #[arg(short = 'B', long = "backing")]
    pub backing: Option<String>,
    /// Format of the backing file given with -B.
    #[arg(short = 'F', long = "backing-format")]
    pub backing_format: Option<String>,
    /// Read an internal snapshot: NAME, snapshot.name=NAME or snapshot.id=ID.
    #[arg(short = 'l', long = "snapshot", alias = "source-snapshot")]
    pub snapshot: Option<String>,
    /// Cache mode of the output: `unsafe` skips the final flush to disk (faster; a crash soon after
    /// may lose the new image); every other mode (`writeback`, the default, `none` or `off`,
    /// `writethrough`, `directsync`) flushes before the image appears under its name.
    #[arg(
        short = 't',
        long = "cache",
        aliases = ["output-cache", "target-cache"],
        default_value = "writeback"
    )]
    pub cache: String,
    /// Cache mode of the sources, checked as qemu-img checks it (`writeback`, the default, `none`
    /// or `off`, `writethrough`, `directsync`, `unsafe`). vdisk reads through the page cache
    /// whatever the mode: the bytes read are the same.
    #[arg(short = 'T', long = "source-cache", default_value = "writeback")]
    pub source_cache: String,
    /// The existing target (with -n) already reads as zeros.
    #[arg(long)]
    pub target_is_zero: bool,
    /// Quiet.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// Each source is QEMU's option string (`driver=qcow2,file.filename=x.qcow2`) instead of a
    /// file name.
    #[arg(long = "image-opts")]
    pub image_opts: bool,
    /// Source images (concatenated) followed by the output image. Options may come between them,
    /// as getopt lets them in qemu-img (`convert disk.vmdk -O qcow2 disk.qcow2`).
    #[arg(num_args = 1.., action = clap::ArgAction::Append)]
    pub files: Vec<PathBuf>,
}

/// `vdisk dd` arguments: qemu-img dd's flags and dd-style operands.
#[derive(Debug, clap::Args)]
pub struct DdArgs {
    /// Input format (probed when omitted).
    #[arg(short = 'f', long = "format")]
    pub format: Option<String>,
    /// Output format (default raw).
    #[arg(short = 'O', long = "output-format", default_value = "raw")]
    pub output_format: String,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// if=INPUT of=OUTPUT [bs=BLOCK_SIZE (default 512)] [count=BLOCKS] [skip=BLOCKS]. As in
    /// qemu-img, count counts blocks from the start of the input, skip included, and options may
    /// come between the operands.
    #[arg(value_name = "OPERAND")]
    pub operands: Vec<String>,
}

/// The image and how to find its filesystems, for `filesystems`, `df`, `ls` and `cat`.
#[derive(Debug, clap::Args)]
pub struct GuestArgs {
    /// Image format (probed when omitted).
    #[arg(short = 'f', long = "format")]
    pub format: Option<String>,
    /// Mount DEVICE (`/dev/sda2`) on MOUNTPOINT (default `/`) instead of mounting what the
    /// guest's /etc/fstab says; repeat for several (libguestfs's -m).
    #[arg(short = 'm', long = "mount", value_name = "DEVICE[:MOUNTPOINT]")]
    pub mounts: Vec<String>,
    /// Read an ext3/ext4 (or XFS) filesystem whose journal needs recovery (a running or crashed guest) as
    /// it is on disk, as debugfs does, instead of replaying the journal in memory first as the
    /// kernel's mount would (the image is never written either way).
    #[arg(long = "ignore-journal")]
    pub ignore_journal: bool,
    /// The image.
    pub filename: PathBuf,
}

/// `vdisk bench` arguments: qemu-img bench's flags.
#[derive(Debug, clap::Args)]
// The numbers take values that start with `-` ("-0", "-1"), as getopt hands them to qemu-img.
pub struct BenchArgs {
    /// Number of requests (default 75000).
    #[arg(
        short = 'c',
        long = "count",
        default_value = "75000",
        allow_hyphen_values = true
    )]
    pub count: String,
    /// Requests in flight at once (default 64).
    #[arg(
        short = 'd',
        long = "depth",
        default_value = "64",
        allow_hyphen_values = true
    )]
    pub depth: String,
    /// Image format (probed when omitted).
    #[arg(short = 'f', long = "format")]
    pub format: Option<String>,
    /// FILENAME is QEMU's option string (`driver=qcow2,file.filename=x.qcow2`).
    #[arg(long = "image-opts")]
    pub image_opts: bool,
    /// Flush after this many write requests (write tests only).
    #[arg(long = "flush-interval", allow_hyphen_values = true)]
    pub flush_interval: Option<String>,
    /// Do not wait for the requests in flight before a flush.
    #[arg(long = "no-drain")]
    pub no_drain: bool,
    /// AIO mode (native, threads, io_uring): checked as qemu-img checks it; vdisk reads and
    /// writes with positional system calls on worker threads.
    #[arg(short = 'i', long = "aio")]
    pub aio: Option<String>,
    /// Native AIO (accepted; see -i).
    #[arg(short = 'n', long = "native")]
    pub native: bool,
    /// Offset of the first request (default 0).
    #[arg(
        short = 'o',
        long = "offset",
        default_value = "0",
        allow_hyphen_values = true
    )]
    pub offset: String,
    /// Byte written by write requests (default 0).
    #[arg(long = "pattern", default_value = "0", allow_hyphen_values = true)]
    pub pattern: String,
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Bytes per request (default 4096).
    #[arg(
        short = 's',
        long = "size",
        default_value = "4096",
        allow_hyphen_values = true
    )]
    pub size: String,
    /// Bytes between the offsets of consecutive requests (default: the request size).
    #[arg(
        short = 'S',
        long = "step-size",
        default_value = "0",
        allow_hyphen_values = true
    )]
    pub step: String,
    /// Cache mode (checked as qemu-img checks it).
    #[arg(short = 't', long = "cache", default_value = "writeback")]
    pub cache: String,
    #[arg(short = 'U', long = "force-share")]
    pub force_share: bool,
    /// Write requests instead of read requests.
    #[arg(short = 'w', long = "write")]
    pub write: bool,
    pub filename: PathBuf,
}
