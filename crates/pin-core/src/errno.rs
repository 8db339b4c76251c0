//! errno numbers to their names (asm-generic/errno-base.h, errno.h), so
//! errors crossing into JS keep the name a user can search for.

pub fn name(errno: i32) -> &'static str {
    match errno {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        6 => "ENXIO",
        7 => "E2BIG",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        22 => "EINVAL",
        24 => "EMFILE",
        25 => "ENOTTY",
        28 => "ENOSPC",
        34 => "ERANGE",
        38 => "ENOSYS",
        75 => "EOVERFLOW",
        95 => "EOPNOTSUPP",
        _ => "EUNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_kernel_errors_pinion_sees() {
        assert_eq!(super::name(12), "ENOMEM");
        assert_eq!(super::name(25), "ENOTTY");
        assert_eq!(super::name(4242), "EUNKNOWN");
    }
}
