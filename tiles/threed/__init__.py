"""3D Tiles 1.1: glb content with per-feature metadata, tileset.json, subdivision and levels of detail.

`gltf` writes glb (EXT_mesh_features, EXT_structural_metadata, meshopt compression), `metadata`
encodes property tables, `tileset` writes tileset.json, `subdivide` splits meshes into tiles with
levels of detail, `validate` checks what was written, `bim` builds a BIM layer's tileset and
`build` keeps built tilesets on disk per layer and time and assembles the twin's root tileset.
"""
