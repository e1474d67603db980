// The `Link: <…>; rel="next"` header by which registries page their listings (tags, catalog, referrers lists):
// where the next page is, as the header writes it (relative or absolute; the caller decides what of it to use).

const NEXT_LINK = /^\s*<([^>]*)>\s*;\s*rel="?next"?/i;

/** The target of a `rel="next"` link, or undefined when the header names none. */
export function nextLinkTarget(link: string | undefined): string | undefined {
  return NEXT_LINK.exec(link ?? '')?.[1];
}
