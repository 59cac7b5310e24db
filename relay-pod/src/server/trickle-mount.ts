/** Where the in-process trickle server's channels live (go-livepeer's layout). */
export const TRICKLE_MOUNT_PATH = "/ai/trickle/";
