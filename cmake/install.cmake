# SPDX-License-Identifier: MIT
#
# Install rules: the public header, the shared and static libraries, the zpipe
# CLI, a CMake package (find_package(zpipe) gives zpipe::zpipe and zpipe::zpipe_static) and
# a pkg-config file. Included last from the top-level CMakeLists.txt, after the
# zpipe and zpipe_static targets exist. It must never install a private header:
# include/zpipe.h, with the zpipe_version.h that the build writes for it, is
# the whole public interface.
# tests/consumer/run.sh installs into a temporary prefix and builds against it.
#
# Every rule names its component, one per Debian package (cmake/package.cmake):
# runtime (libzpipe0: the shared library), dev (libzpipe-dev: header, static
# library, the .so link, zpipe.pc, the CMake package) and cli (zpipe: the
# command, its plugins, its manual page).

include(CMakePackageConfigHelpers)

set(ZP_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/zpipe)
set(ZP_PC_DIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

install(FILES ${PROJECT_SOURCE_DIR}/include/zpipe.h
              ${PROJECT_BINARY_DIR}/include/zpipe_version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)

# The include directory reaches importers through the targets'
# $<INSTALL_INTERFACE:...> include path, so no INCLUDES DESTINATION here.
install(TARGETS zpipe zpipe_static
        EXPORT zpipeTargets
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
          COMPONENT runtime NAMELINK_COMPONENT dev
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)

# The zpipe CLI; the example plugin installs itself (examples/CMakeLists.txt).
install(TARGETS zpipe_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT cli)

# The exported link interfaces name PkgConfig::MSGPACK (both libraries) and,
# for the static one, $<LINK_ONLY:PkgConfig::ZMQ / UV / MHD /
# Threads::Threads>.
# zpipeConfig.cmake recreates those targets before it loads this file.
install(EXPORT zpipeTargets
        NAMESPACE zpipe::
        FILE zpipeTargets.cmake
        DESTINATION ${ZP_CMAKE_DIR} COMPONENT dev)

configure_package_config_file(
    ${PROJECT_SOURCE_DIR}/cmake/zpipeConfig.cmake.in
    ${PROJECT_BINARY_DIR}/cmake/zpipeConfig.cmake
    INSTALL_DESTINATION ${ZP_CMAKE_DIR})
write_basic_package_version_file(
    ${PROJECT_BINARY_DIR}/cmake/zpipeConfigVersion.cmake
    VERSION ${PROJECT_VERSION}
    COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cmake/zpipeConfig.cmake
              ${PROJECT_BINARY_DIR}/cmake/zpipeConfigVersion.cmake
        DESTINATION ${ZP_CMAKE_DIR} COMPONENT dev)

# zpipe.pc names its prefix by its own place, ${pcfiledir} (the folder
# pkg-config found it in) and the way up from LIBDIR/pkgconfig, so it is
# right for whatever prefix `cmake --install --prefix DIR` or a package
# installs to, and for a prefix moved after installation. Only a LIBDIR
# given as an absolute path has no way up: the .pc then names the prefix of
# the configuration.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
    set(ZP_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
    set(ZP_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
    file(RELATIVE_PATH zp_up "/${ZP_PC_DIR}" "/") # ../.., with a / at the end
    string(REGEX REPLACE "/$" "" zp_up "${zp_up}")
    set(ZP_PC_PREFIX "\${pcfiledir}/${zp_up}")
    set(ZP_PC_LIBDIR "\${exec_prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
    set(ZP_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
    set(ZP_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/zpipe.pc.in ${PROJECT_BINARY_DIR}/cmake/zpipe.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/cmake/zpipe.pc
        DESTINATION ${ZP_PC_DIR} COMPONENT dev)
