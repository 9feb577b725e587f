export declare const MIN_NODE: [number, number]
/** null when the running Node is new enough, else a message explaining how to run. */
export declare function checkNode (versions?: { node: string }): string | null
