// C struct layouts as data. Each header module (kvm.ts, vfio.ts, iommufd.ts)
// exports `layout`: per struct, under the header's names, `sizeof` and the
// byte offset from the struct's start of every field Pinion reads or writes.
// Members of unions and nested structs nest, as in C (`io: { port: 34 }` is
// offsetof(struct kvm_run, io.port)). test/unit/uapi.test.ts compiles every
// entry against the kernel's headers, so the code reads offsets from here.
export interface Offsets {
  readonly [field: string]: number | Offsets;
}
